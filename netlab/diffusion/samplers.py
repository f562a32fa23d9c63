"""Deterministic and stochastic samplers as `lax.scan` loops over a log-SNR grid.

Every sampler takes `denoise(x, logsnr) -> x0_hat` (the model in data-prediction form, guidance
already applied, see `guidance.py`), a starting point x_T ~ N(0, I) (variance-preserving
coordinates), and `grid`: a float array of log-SNR values from noise to data (built on the host
in float64 by `schedules.sampling_grid`, passed as a traced array, so a new grid or guidance
scale of the same length does not recompile). They return the sample at the grid's last point;
`finish=True` adds one last denoiser call to return x0_hat there (one more NFE). Everything is
computed in the dtype of x (the grid is cast to it).

A grid may end at sigma = 0 (log-SNR +inf, `schedules.sampling_grid(..., final="zero")` and
diffusers' spacings): the last step is then x0_hat in closed form for every sampler (DDIM:
alpha_s = 1, sigma_s = 0; multistep solvers: order 1 there; Heun: EDM's Euler step), and
`finish` returns the sample as it is.

Update rules (lambda = logsnr / 2, h = lambda_s - lambda_t, alpha/sigma from the grid):
- DDIM(eta) (Song et al. 2021, Eq. 12 and 16); eta = 1 is DDPM's ancestral sampler with the
  posterior variance beta-tilde (Ho et al. 2020, Eq. 6-7).
- EDM Heun with optional churn (Karras et al. 2022, Algorithm 2), in the VE view x/alpha.
- DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2, data prediction), order 1 on the first step
  and, with `lower_order_final` (default, as diffusers), on the last one below 15 steps.
- UniPC (Zhao et al. 2023, Algorithms 1-2): order-p predictor UniP plus the UniC corrector,
  which reuses the next model evaluation and raises the order by one; no corrector after the
  last step; B(h) = expm1(-h) ("bh2", default) or -h ("bh1"); `lower_order_final` as diffusers.
  `unipc_init` / `unipc_step` / `uni_update` are the pieces DC-Solver (dc_solver.py) reuses.

Each sampler is registered in `registries.SAMPLERS` (`diffusion.sampler`) as
`fn(denoise, x, grid, key=None, *, options...)`; its keyword-only options come from
`diffusion.sampler_kwargs` (DDIM's `eta`, Heun's `churn`, DC-Solver's `ratios`, CFG-PC's `gamma`,
...). A sampler that takes `schedule` gets the task's noise schedule (not a user option).
`check` validates a name and its options when a task is built; `sample` runs one.
"""

import difflib
import inspect

import jax
import jax.numpy as jnp

from netlab.diffusion.registries import SAMPLERS
from netlab.diffusion.schedules import Schedule, alpha_sigma
from netlab.errors import UserError
from netlab.registry import check_choice


def nfe(method: str, num_steps: int, finish: bool = False, final_zero: bool = False) -> int:
    """Denoiser evaluations a sampler spends for `num_steps` grid intervals; on a grid that ends
    at sigma = 0 (`final_zero`) Heun's last step is an Euler step and `finish` is free."""
    fn = SAMPLERS.get(method)
    evals = getattr(fn, "evals_per_step", 1) * num_steps
    if final_zero:
        return evals - getattr(fn, "evals_saved_at_zero", 0)
    return evals + int(finish)


def _safe(lam_t, lam_s):
    """h = lam_s - lam_t, and the same with 1 where the target is sigma = 0 (lam_s = +inf): the
    higher-order terms use the safe h and are then discarded, so no inf or NaN (nor its
    gradient) leaks into the closed-form step x_s = x0_hat."""
    h = lam_s - lam_t
    return h, jnp.where(jnp.isfinite(h), h, jnp.ones_like(h))


@SAMPLERS.register("ddim")
def ddim(denoise, x, grid, key=None, *, eta=0.0):
    """DDIM; to sigma_s = 0 (alpha_s = 1) the step is x0_hat exactly (no variance, no eps)."""
    eta = jnp.asarray(eta, x.dtype)
    keys = jax.random.split(key if key is not None else jax.random.key(0), grid.shape[0] - 1)

    def step(x, inputs):
        l_t, l_s, k = inputs
        a_t, s_t = alpha_sigma(l_t)
        a_s, s_s = alpha_sigma(l_s)
        x0 = denoise(x, l_t)
        eps = (x - a_t * x0) / s_t
        # sigma_eta^2 = eta^2 (1 - abar_s)/(1 - abar_t) (1 - abar_t/abar_s)
        var = eta**2 * (s_s**2 / s_t**2) * (1.0 - (a_t**2) / (a_s**2))
        var = jnp.clip(var, 0.0, s_s**2)
        noise = jax.random.normal(k, x.shape, x.dtype)
        return a_s * x0 + jnp.sqrt(s_s**2 - var) * eps + jnp.sqrt(var) * noise, None

    x, _ = jax.lax.scan(step, x, (grid[:-1], grid[1:], keys))
    return x


@SAMPLERS.register("ddpm")
def ddpm(denoise, x, grid, key=None):
    """Ancestral sampling (Ho et al. 2020): DDIM with eta = 1."""
    return ddim(denoise, x, grid, key, eta=1.0)


@SAMPLERS.register("heun")
def heun(denoise, x, grid, key=None, *, churn=0.0, s_noise=1.0, s_tmin=0.0, s_tmax=float("inf")):
    """EDM Algorithm 2 on sigma_ve = exp(-logsnr/2); churn = S_churn (0: deterministic, order 2).
    When the next sigma is 0 the step is Euler's (Algorithm 2, line 9: no second evaluation),
    i.e. x0_hat at the churned point: 2N - 1 evaluations on a grid that ends at sigma = 0."""
    n = grid.shape[0] - 1
    keys = jax.random.split(key if key is not None else jax.random.key(0), n)
    sig = jnp.exp(-0.5 * grid)
    alpha0, _ = alpha_sigma(grid[0])
    y = x / alpha0  # VE coordinates
    churn, s_noise = jnp.asarray(churn, x.dtype), jnp.asarray(s_noise, x.dtype)
    s_tmin, s_tmax = jnp.asarray(s_tmin, x.dtype), jnp.asarray(s_tmax, x.dtype)
    gamma_max = jnp.sqrt(jnp.asarray(2.0, x.dtype)) - 1

    def d_ve(y, sigma):
        logsnr = -2.0 * jnp.log(sigma)
        a, _ = alpha_sigma(logsnr)
        return denoise(a * y, logsnr)

    def step(y, inputs):
        s_cur, s_next, k = inputs
        gamma = jnp.where(
            (s_cur >= s_tmin) & (s_cur <= s_tmax), jnp.minimum(churn / n, gamma_max), 0.0
        )
        s_hat = s_cur * (1 + gamma)
        # sqrt(s_hat^2 - s_cur^2) = s_cur sqrt(gamma (2 + gamma)): exactly 0 at gamma = 0 (the
        # difference of squares is not once XLA contracts it into an FMA: ~1e-8 noise in float64)
        kick = s_cur * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise
        y_hat = y + kick * jax.random.normal(k, y.shape, y.dtype)
        x0 = d_ve(y_hat, s_hat)
        d = (y_hat - x0) / s_hat

        def second_order(_):
            y_euler = y_hat + (s_next - s_hat) * d
            d2 = (y_euler - d_ve(y_euler, s_next)) / s_next
            return y_hat + (s_next - s_hat) * 0.5 * (d + d2)

        return jax.lax.cond(s_next > 0, second_order, lambda _: x0.astype(y.dtype), None), None

    y, _ = jax.lax.scan(step, y, (sig[:-1], sig[1:], keys))
    a_last, _ = alpha_sigma(grid[-1])
    return a_last * y


heun.evals_per_step = 2
heun.evals_saved_at_zero = 1


@SAMPLERS.register("dpmpp_2m")
def dpmpp_2m(denoise, x, grid, key=None, *, lower_order_final=True):
    """DPM-Solver++(2M), data prediction, order 1 on the first step. `lower_order_final`: order 1
    on the last interval when there are fewer than 15 (diffusers' DPMSolverMultistepScheduler
    default); the step to sigma = 0 is always order 1, i.e. x0_hat (the 2M difference would
    divide by h = inf)."""
    n = grid.shape[0] - 1
    lam = 0.5 * grid
    low_final = bool(lower_order_final) and n < 15

    def step(carry, inputs):
        x, x0_prev, i = carry
        l_t, l_s, lam_prev = inputs
        a_s, s_s = alpha_sigma(l_s)
        _, s_t = alpha_sigma(l_t)
        lam_t, lam_s = 0.5 * l_t, 0.5 * l_s
        h, h_safe = _safe(lam_t, lam_s)
        x0 = denoise(x, l_t)
        second = (i > 0) & jnp.isfinite(h) & ~((i == n - 1) & low_final)
        r0 = (lam_t - lam_prev) / h_safe
        corrected = x0 + (x0 - x0_prev) / (2.0 * jnp.where(second, r0, 1.0))
        d = jnp.where(second, corrected, x0)
        x = (s_s / s_t) * x - a_s * jnp.expm1(-h) * d
        return (x, x0, i + 1), None

    lam_prev = jnp.concatenate([lam[:1], lam[:-2]])
    (x, _, _), _ = jax.lax.scan(step, (x, jnp.zeros_like(x), 0), (grid[:-1], grid[1:], lam_prev))
    return x


@SAMPLERS.register("unipc")
def unipc(denoise, x, grid, key=None, *, order=2, variant="bh2", lower_order_final=True):
    """UniPC (order-`order` UniP + UniC), diffusers' UniPCMultistepScheduler defaults: order 2,
    B(h) = expm1(-h) ("bh2"), `lower_order_final` (order min(order, N - i) on interval i, so
    order 1 on the last one, at any step count)."""
    check_choice("diffusion.sampler_kwargs.order", order, (1, 2, 3))
    check_choice("diffusion.sampler_kwargs.variant", variant, ("bh1", "bh2"))
    return unipc_bh(denoise, x, grid, order, variant, bool(lower_order_final))


def _uni_coefficients(hh, variant, order):
    """B(h) and b_1..b_order of UniPC (Zhao et al. 2023, Algorithm 1-2; hh = -h, data
    prediction): b_k = k! h phi_k(hh) / B(h), h phi_1 = expm1(hh), h phi_{k+1} = h phi_k / hh
    - 1/(k+1)! starting from hphi1/hh - 1."""
    big_b = hh if variant == "bh1" else jnp.expm1(hh)
    hphi_k = jnp.expm1(hh) / hh - 1.0
    fact, b = 1.0, []
    for k in range(1, order + 1):
        b.append(hphi_k * fact / big_b)
        fact *= k + 1
        hphi_k = hphi_k / hh - 1.0 / fact
    return big_b, b


def _solve(rows, rhs):
    """rho with sum_j rows[i][j] rho_j = rhs[i] for 1x1 .. 3x3 systems of traced scalars."""
    if len(rhs) == 1:
        return [rhs[0] / rows[0][0]]
    a = jnp.stack([jnp.stack(r) for r in rows])
    return list(jnp.linalg.solve(a, jnp.stack(rhs)))


def uni_update(x, ms, lams, i, l_s, k, order, variant, m_new=None):
    """One UniPC step from the state x at lams[0] (model outputs `ms` at `lams`, newest first,
    slot j valid when i >= j) to log-SNR `l_s`: the predictor UniP of order k (traced, <=
    `order`) or, given `m_new` (the output at the predicted point), the corrector UniC of the
    same order (UniC-k; order 1 uses rho = 1/2, UniP-2 rho = 1/2, as diffusers and the
    authors). To sigma = 0 (l_s = +inf) use k = 1: x0_hat = ms[0] in closed form."""
    a_s, s_s = alpha_sigma(l_s)
    _, s_t = alpha_sigma(2.0 * lams[0])
    h, h_safe = _safe(lams[0], 0.5 * l_s)
    x_tilde = (s_s / s_t) * x - a_s * jnp.expm1(-h) * ms[0]
    big_b, b = _uni_coefficients(-h_safe, variant, order)
    one = jnp.ones_like(h_safe)
    rks = [
        jnp.where(i >= j, (lams[j] - lams[0]) / h_safe, -float(j) * one) for j in range(1, order)
    ]
    d1s = [(ms[j] - ms[0]) / rks[j - 1] for j in range(1, order)]
    out = x_tilde if m_new is None else x_tilde - a_s * big_b * 0.5 * (m_new - ms[0])
    for kk in range(2, order + 1):
        r = rks[: kk - 1] + [one]
        if m_new is None:  # UniP-kk: rho from the leading (kk-1) x (kk-1) block
            block = [[v**p for v in r[:-1]] for p in range(kk - 1)]
            rho = [0.5 * one] if kk == 2 else _solve(block, b[: kk - 1])
            res = sum(rho[j] * d1s[j] for j in range(kk - 1))
        else:  # UniC-kk: the full kk x kk system, the last weight on m_new - m0
            rho = _solve_corrector(r, b[:kk])
            res = sum(rho[j] * d1s[j] for j in range(kk - 1)) + rho[-1] * (m_new - ms[0])
        out = jnp.where(k == kk, x_tilde - a_s * big_b * res, out)
    return out


def _solve_corrector(r, b):
    if len(r) == 2:  # closed form of [[1, 1], [r1, 1]] rho = b
        det = 1.0 - r[0]
        return [(b[0] - b[1]) / det, (b[1] - r[0] * b[0]) / det]
    return _solve([[v**p for v in r] for p in range(len(r))], b)


def unipc_order(i, n, l_s, order, lower_order_final):
    """Order of step i of n: min(order, i + 1) (warm-up), min(., n - i) with
    `lower_order_final`, and 1 when the step ends at sigma = 0."""
    k = jnp.minimum(order, i + 1)
    if lower_order_final:
        k = jnp.minimum(k, n - i)
    return jnp.where(jnp.isfinite(l_s), k, 1)


def unipc_init(denoise, x, grid):
    """UniPC state at grid[0]: (x, model outputs newest first, their lambdas, step index)."""
    zero = jnp.zeros_like(x)
    lam0 = 0.5 * grid[0]
    return (x, (denoise(x, grid[0]), zero, zero), (lam0, lam0, lam0), 0)


def unipc_step(denoise, state, l_s, k, order, variant):
    """Predictor to l_s, one model call there, corrector (the raw new output); the new output
    becomes the newest in the history for the next step."""
    x, ms, lams, i = state
    x_p = uni_update(x, ms, lams, i, l_s, k, order, variant)
    m_new = denoise(x_p, l_s)
    x_c = uni_update(x, ms, lams, i, l_s, k, order, variant, m_new=m_new)
    return (x_c, (m_new, ms[0], ms[1]), (0.5 * l_s, lams[0], lams[1]), i + 1)


def unipc_bh(denoise, x, grid, order=2, variant="bh2", lower_order_final=True):
    """UniPC over `grid`: scan of `unipc_step` over the first n - 1 intervals, then the last
    predictor alone (no corrector after the last step, as in the paper and diffusers)."""
    n = grid.shape[0] - 1

    def step(state, l_s):
        k = unipc_order(state[3], n, l_s, order, lower_order_final)
        return unipc_step(denoise, state, l_s, k, order, variant), None

    state, _ = jax.lax.scan(step, unipc_init(denoise, x, grid), grid[1:-1])
    x, ms, lams, i = state
    k = unipc_order(i, n, grid[-1], order, lower_order_final)
    return uni_update(x, ms, lams, i, grid[-1], k, order, variant)


def sample(denoise, x, grid, method="dpmpp_2m", key=None, finish=True, schedule=None, **kwargs):
    """Run `method` over `grid` in x's dtype; with `finish`, return denoise(x, grid[-1]) at the
    end (x itself when the grid ends at sigma = 0). `schedule` goes to samplers that take it."""
    if grid.shape[0] < 2:
        raise ValueError(f"a sampling grid needs at least 2 points (NFE >= 1), got {grid.shape[0]}")
    grid = jnp.asarray(grid, x.dtype)  # the scans carry x: one float type throughout
    fn = SAMPLERS.get(method)
    if schedule is not None and "schedule" in inspect.signature(fn).parameters:
        kwargs["schedule"] = schedule
    x = fn(denoise, x, grid, key, **kwargs)
    if not finish:
        return x
    return jax.lax.cond(
        jnp.isfinite(grid[-1]), lambda x: denoise(x, grid[-1]).astype(x.dtype), lambda x: x, x
    )


def options(fn) -> tuple | None:
    """The option names a sampler takes after (denoise, x, grid, key); None when it takes any."""
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params[4:] if p.kind in kinds and p.name != "schedule")


def check(
    method: str,
    kwargs=None,
    data_shape=None,
    num_steps: int = 4,
    key="diffusion.sampler",
    dtype=jnp.float32,
):
    """The sampler `method` after checking its options `kwargs` (`diffusion.sampler_kwargs`):
    unknown names and, given `data_shape`, values that fail when one call on a stand-in denoiser
    is traced (no computation). One-line UserError naming the key and the choices."""
    fn = SAMPLERS.get(method, key=key)
    kwargs = dict(kwargs or {})
    allowed = options(fn)
    for name in kwargs:
        if allowed is not None and name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            choices = f"choose from {', '.join(allowed)}" if allowed else "it takes none"
            raise UserError(
                f"diffusion.sampler_kwargs.{name}: not an option of sampler "
                f"{method!r}; {choices}{hint}"
            )
    if data_shape is not None:
        grid = jnp.linspace(-8.0, 8.0, num_steps + 1, dtype=dtype)
        x = jax.ShapeDtypeStruct((2,) + tuple(data_shape), dtype)
        try:
            jax.eval_shape(
                lambda x: sample(
                    lambda z, l: 0.5 * z,
                    x,
                    grid,
                    method,
                    jax.random.key(0),
                    schedule=Schedule(),  # samplers that take one get the default schedule
                    **kwargs,
                ),
                x,
            )
        except UserError:
            raise
        except (TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"diffusion.sampler_kwargs={kwargs}: rejected by sampler {method!r} ({first})"
            ) from None
    return fn

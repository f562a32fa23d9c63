"""Deterministic and stochastic samplers as `lax.scan` loops over a log-SNR grid.

Every sampler takes `denoise(x, logsnr) -> x0_hat` (the model in data-prediction form, guidance
already applied, see `guidance.py`), a starting point x_T ~ N(0, I) (variance-preserving
coordinates), and `grid`: a float array of log-SNR values from noise to data (built on the host in
float64 by `schedules.sampling_grid`, passed as a traced array, so a new grid or guidance scale of the
same length does not recompile). They return the sample at the grid's last point; `finish=True`
adds one last denoiser call to return x0_hat there (one more NFE).

Update rules (lambda = logsnr / 2, h = lambda_s - lambda_t, alpha/sigma from the grid):
- DDIM(eta) (Song et al. 2021, Eq. 12 and 16); eta = 1 is DDPM's ancestral sampler with the
  posterior variance beta-tilde (Ho et al. 2020, Eq. 6-7).
- EDM Heun with optional churn (Karras et al. 2022, Algorithm 2), in the VE view x/alpha.
- DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2, data prediction), order 1 on the first step.
- UniPC-bh2 (Zhao et al. 2023, Algorithms 1-2, B(h) = expm1(-h)): order-2 predictor UniP plus the
  UniC corrector, which reuses the next model evaluation and raises the order by one; no corrector
  after the last step. `unipc_bh2` takes a hook that replaces each new model output before UniC
  uses it: DC-Solver's dynamic compensation (dc_solver.py) is that hook.

Each sampler is registered in `registries.SAMPLERS` (`diffusion.sampler`) as
`fn(denoise, x, grid, key=None, *, options...)`; its keyword-only options come from
`diffusion.sampler_kwargs` (DDIM's `eta`, Heun's `churn`, DC-Solver's `ratios`, CFG-PC's `gamma`,
...). `check` validates a name and its options when a task is built; `sample` runs one.
"""  # noqa: E501

import difflib
import inspect

import jax
import jax.numpy as jnp

from netlab.diffusion.registries import SAMPLERS
from netlab.diffusion.schedules import alpha_sigma
from netlab.errors import UserError


def nfe(method: str, num_steps: int, finish: bool = False) -> int:
    """Denoiser evaluations a sampler spends for `num_steps` grid intervals."""
    return getattr(SAMPLERS.get(method), "evals_per_step", 1) * num_steps + int(finish)


@SAMPLERS.register("ddim")
def ddim(denoise, x, grid, key=None, *, eta=0.0):
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
    """EDM Algorithm 2 on sigma_ve = exp(-logsnr/2); churn = S_churn (0: deterministic, order 2)."""
    n = grid.shape[0] - 1
    keys = jax.random.split(key if key is not None else jax.random.key(0), n)
    sig = jnp.exp(-0.5 * grid)
    alpha0, _ = alpha_sigma(grid[0])
    y = x / alpha0  # VE coordinates

    def d_ve(y, sigma):
        logsnr = -2.0 * jnp.log(sigma)
        a, _ = alpha_sigma(logsnr)
        return denoise(a * y, logsnr)

    def step(y, inputs):
        s_cur, s_next, k = inputs
        gamma = jnp.where(
            (s_cur >= s_tmin) & (s_cur <= s_tmax), jnp.minimum(churn / n, jnp.sqrt(2.0) - 1), 0.0
        )
        s_hat = s_cur * (1 + gamma)
        kick = jnp.sqrt(jnp.maximum(s_hat**2 - s_cur**2, 0.0)) * s_noise
        y_hat = y + kick * jax.random.normal(k, y.shape, y.dtype)
        d = (y_hat - d_ve(y_hat, s_hat)) / s_hat
        y_euler = y_hat + (s_next - s_hat) * d
        d2 = (y_euler - d_ve(y_euler, s_next)) / s_next
        return y_hat + (s_next - s_hat) * 0.5 * (d + d2), None

    y, _ = jax.lax.scan(step, y, (sig[:-1], sig[1:], keys))
    a_last, _ = alpha_sigma(grid[-1])
    return a_last * y


heun.evals_per_step = 2


@SAMPLERS.register("dpmpp_2m")
def dpmpp_2m(denoise, x, grid, key=None):
    lam = 0.5 * grid

    def step(carry, inputs):
        x, x0_prev, i = carry
        l_t, l_s, lam_prev = inputs
        a_s, s_s = alpha_sigma(l_s)
        _, s_t = alpha_sigma(l_t)
        lam_t, lam_s = 0.5 * l_t, 0.5 * l_s
        h = lam_s - lam_t
        x0 = denoise(x, l_t)
        r0 = (lam_t - lam_prev) / h
        corrected = x0 + (x0 - x0_prev) / (2.0 * jnp.where(i > 0, r0, 1.0))
        d = jnp.where(i > 0, corrected, x0)
        x = (s_s / s_t) * x - a_s * jnp.expm1(-h) * d
        return (x, x0, i + 1), None

    lam_prev = jnp.concatenate([lam[:1], lam[:-2]])
    (x, _, _), _ = jax.lax.scan(step, (x, jnp.zeros_like(x), 0), (grid[:-1], grid[1:], lam_prev))
    return x


@SAMPLERS.register("unipc")
def unipc(denoise, x, grid, key=None):
    return unipc_bh2(denoise, x, grid)


def unipc_bh2(denoise, x, grid, compensate=None, ratios=None):
    """UniPC-bh2 (order-2 UniP + UniC). `compensate(m_new, m0, m_prev, lam_prev, lam_t, lam_s,
    rho, i) -> m`, when given, replaces each new model output m_new (at the predicted point) by
    the value UniC and the next step use; `ratios` (one per grid interval, traced) give `rho`."""
    n = grid.shape[0] - 1
    lam = 0.5 * grid
    ratios = jnp.ones((n,), grid.dtype) if ratios is None else jnp.asarray(ratios, grid.dtype)
    m0 = denoise(x, grid[0])

    def tilde(x, m0, l_t, l_s):
        a_s, s_s = alpha_sigma(l_s)
        _, s_t = alpha_sigma(l_t)
        hh = -(0.5 * l_s - 0.5 * l_t)
        return (s_s / s_t) * x - a_s * jnp.expm1(hh) * m0, a_s, hh

    def predictor(x, m0, m_prev, lam_prev, l_t, l_s, i):
        x_t, a_s, hh = tilde(x, m0, l_t, l_s)
        b_h = jnp.expm1(hh)
        h = -hh
        r1 = jnp.where(i > 0, (lam_prev - 0.5 * l_t) / h, 1.0)
        d1 = (m_prev - m0) / r1
        return x_t - jnp.where(i > 0, 1.0, 0.0) * a_s * b_h * 0.5 * d1, x_t, a_s, b_h, hh, r1, d1

    def step(carry, inputs):
        x, m0, m_prev, lam_prev, i = carry
        l_t, l_s, rho = inputs
        x_p, x_t, a_s, b_h, hh, r1, d1 = predictor(x, m0, m_prev, lam_prev, l_t, l_s, i)
        m_s = denoise(x_p, l_s)
        if compensate is not None:
            m_s = compensate(m_s, m0, m_prev, lam_prev, 0.5 * l_t, 0.5 * l_s, rho, i)
        d_new = m_s - m0
        # UniC weights: order 1 -> rho = 1/2; order 2 -> solve [[1, 1], [r1, 1]] rho = b.
        hphi1 = jnp.expm1(hh)
        g1 = hphi1 / hh - 1.0
        g2 = g1 / hh - 0.5
        b1, b2 = g1 / b_h, 2.0 * g2 / b_h
        det = 1.0 - r1
        rho0 = (b1 - b2) / jnp.where(i > 0, det, 1.0)
        rho1 = (b2 - r1 * b1) / jnp.where(i > 0, det, 1.0)
        corr2 = rho0 * d1 + rho1 * d_new
        corr1 = 0.5 * d_new
        x_c = x_t - a_s * b_h * jnp.where(i > 0, corr2, corr1)
        return (x_c, m_s, m0, 0.5 * l_t, i + 1), None

    carry = (x, m0, jnp.zeros_like(x), lam[0], 0)
    carry, _ = jax.lax.scan(step, carry, (grid[:-2], grid[1:-1], ratios[: n - 1]))
    x, m0, m_prev, lam_prev, i = carry
    x_last, *_ = predictor(x, m0, m_prev, lam_prev, grid[-2], grid[-1], jnp.asarray(n - 1))
    return x_last


def sample(denoise, x, grid, method="dpmpp_2m", key=None, finish=True, **kwargs):
    """Run `method` over `grid`; with `finish`, return denoise(x, grid[-1]) at the end."""
    if grid.shape[0] < 2:
        raise ValueError(f"a sampling grid needs at least 2 points (NFE >= 1), got {grid.shape[0]}")
    grid = jnp.asarray(grid, x.dtype)  # the scans carry x: one float type throughout
    x = SAMPLERS.get(method)(denoise, x, grid, key, **kwargs)
    return denoise(x, grid[-1]) if finish else x


def options(fn) -> tuple | None:
    """The option names a sampler takes after (denoise, x, grid, key); None when it takes any."""
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params[4:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


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
                    lambda z, l: 0.5 * z, x, grid, method, jax.random.key(0), **kwargs
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

"""DC-Solver: UniPC with dynamic compensation (Zhao et al. 2024, "DC-Solver: Improving
Predictor-Corrector Diffusion Sampler via Dynamic Compensation", arXiv 2409.03755, Sec. 3.2-3.3),
following the authors' `DCSolver.sample` / `dynamic_compensation` / `find_optim_ratio`
(wl-zhao/DC-Solver, stable-diffusion/ldm/models/diffusion/dc_solver/dc_solver.py).

In UniPC the model output m_i is evaluated at the *predicted* point x^P_i but then used as if it
belonged to the corrected point. Step i of the authors' loop (interval t_i -> t_{i+1}) first
replaces the newest output m_i in the history by the Lagrange interpolant of the last three
outputs at a shifted time, m* = sum_j m_j prod_{k != j} (t* - t_k)/(t_j - t_k) over the nodes
(t_{i-2}, t_{i-1}, t_i), t* = rho_i t_i + (1 - rho_i) t_{i-1}, and then runs the UniPC update
(predictor, one model call, corrector). So the corrector of step i - 1 used the raw m_i; the
compensated value is what step i's predictor (and its corrector's m0) uses, and it stays in the
history. rho = 1 is the identity; the first two steps keep rho = 1 (fewer than three nodes). The
authors interpolate in the schedule's time t (`variable="t"`, from the task's noise schedule by
`schedules.t_from_logsnr`; any affine reparameterisation of t gives the same m*; a direct call
without `schedule` interpolates in lambda = logsnr / 2), with UniPC
order 3, B(h) = h ("bh1") and `lower_order_final`: the defaults here.

- `dc_unipc`: the sampler with given ratios (one per grid interval, a traced array: new ratios do
  not recompile).
- `dc_solver`, the sampler `diffusion.sampler="dc_solver"` (NFE = sample_steps, + 1 with
  `finish`; fitting costs extra calls on `fit_points` rows): `ratios` from
  `diffusion.sampler_kwargs.ratios`, or fitted at sampling time on the first `fit_points`
  starting points against a reference trajectory of the same points. `fit="per_step"` (default,
  the authors' `search_dc`): step by step, rho_i minimises ||x_{i+1} - x_ref(t_{i+1})||^2 with
  AdamW (lr 0.1, weight decay 0.01 as torch's default, 40 iterations from rho = 1), then the fit
  trajectory moves on with that rho_i. `fit="joint"` (netlab's earlier variant): all ratios at
  once with Adam on the final-sample error. Differences from the authors: the reference is
  DPM-Solver++(2M) with `reference_steps` steps spread over the grid's intervals and read exactly
  at the grid points (theirs: a 200-step DDIM run read at the nearest noisier point); to sigma = 0
  its last interval runs to log-SNR + 30 and then takes the closed-form step.
- Cascade polynomial regression (Sec. 3.3): rho(i) = sum_k c_k(g, n) (i/N)^k with every c_k a
  quadratic polynomial in (g/12) whose coefficients are quadratic in (n/50), g the guidance scale
  and n the NFE: 9 numbers per k. `cpr_fit` solves for them by least squares from ratios fitted at
  a few (g, n) settings; `cpr_predict` returns ratios for an unseen setting.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.diffusion import samplers, schedules
from netlab.diffusion.registries import SAMPLERS
from netlab.errors import UserError
from netlab.registry import check_choice


def lagrange3(nodes, values, at):
    """Quadratic Lagrange interpolant through (nodes[j], values[j]), j = 0..2, evaluated at `at`."""
    out = 0.0
    for j in range(3):
        w = 1.0
        for k in range(3):
            if k != j:
                w = w * (at - nodes[k]) / (nodes[j] - nodes[k])
        out = out + w * values[j]
    return out


def compensate(ms, i, rho, times):
    """Sec. 3.2: the newest output ms[0] (at times[i]) -> the Lagrange interpolant of
    (ms[2], ms[1], ms[0]) over (times[i-2], times[i-1], times[i]) at rho t_i + (1 - rho) t_{i-1};
    rho = 1 before step 2, which returns ms[0] exactly."""
    ok = i >= 2
    t0 = times[i]
    t1 = jnp.where(ok, times[jnp.maximum(i - 1, 0)], t0 + 1.0)  # distinct dummies when unused
    t2 = jnp.where(ok, times[jnp.maximum(i - 2, 0)], t0 + 2.0)
    rho = jnp.where(ok, rho, jnp.ones_like(rho))
    return lagrange3((t2, t1, t0), (ms[2], ms[1], ms[0]), rho * t0 + (1.0 - rho) * t1)


def _times(grid, variable, schedule):
    """The interpolation variable at the grid points: t of `schedule` (`variable="t"`), or
    lambda = logsnr / 2 (`variable="lambda"`, and for a direct call without a schedule)."""
    check_choice("diffusion.sampler_kwargs.variable", variable, ("t", "lambda"))
    if variable == "lambda" or schedule is None:
        return 0.5 * grid
    return schedules.t_from_logsnr(schedule, grid).astype(grid.dtype)


class _Steps:
    """The authors' loop as pieces: `advance` (compensate, then UniPC step i) and `last`."""

    def __init__(self, denoise, grid, times, order, variant, lower_order_final):
        self.denoise, self.grid, self.times, self.n = denoise, grid, times, grid.shape[0] - 1
        self.order, self.variant, self.lof = order, variant, lower_order_final

    def _prepare(self, state, l_s, rho):
        x, ms, lams, i = state
        ms = (compensate(ms, i, rho, self.times),) + ms[1:]
        k = samplers.unipc_order(i, self.n, l_s, self.order, self.lof)
        return (x, ms, lams, i), k

    def advance(self, state, l_s, rho):
        state, k = self._prepare(state, l_s, rho)
        return samplers.unipc_step(self.denoise, state, l_s, k, self.order, self.variant)

    def last(self, state, rho):
        (x, ms, lams, i), k = self._prepare(state, self.grid[-1], rho)
        return samplers.uni_update(x, ms, lams, i, self.grid[-1], k, self.order, self.variant)

    def run(self, x, ratios):
        def step(state, inputs):
            return self.advance(state, *inputs), None

        init = samplers.unipc_init(self.denoise, x, self.grid)
        state, _ = jax.lax.scan(step, init, (self.grid[1:-1], ratios[: self.n - 1]))
        return self.last(state, ratios[self.n - 1])


def dc_unipc(
    denoise,
    x,
    grid,
    ratios,
    times=None,
    order=3,
    variant="bh1",
    lower_order_final=True,
):
    """UniPC with dynamic compensation; `times` (one per grid point) is the interpolation
    variable (default lambda = logsnr / 2); `ratios` one per interval."""
    times = 0.5 * grid if times is None else jnp.asarray(times, grid.dtype)
    ratios = jnp.asarray(ratios, grid.dtype)
    return _Steps(denoise, grid, times, order, variant, lower_order_final).run(x, ratios)


def reference_states(denoise, x, grid, steps=200):
    """States at every grid point from DPM-Solver++(2M) with ceil(steps / N) sub-steps per
    interval, equal in log-SNR (to sigma = 0: up to log-SNR + 30, then the closed-form step)."""
    m = max(1, -(-int(steps) // (grid.shape[0] - 1)))

    def interval(x, ends):
        a, b = ends
        finite = jnp.linspace(a, jnp.where(jnp.isfinite(b), b, a), m + 1)
        to_zero = jnp.append(jnp.linspace(a, a + 30.0, m), jnp.full((1,), jnp.inf, grid.dtype))
        sub = jnp.where(jnp.isfinite(b), finite, to_zero)
        x = samplers.dpmpp_2m(denoise, x, sub, lower_order_final=False)
        return x, x

    _, xs = jax.lax.scan(interval, x, (grid[:-1], grid[1:]))
    return jnp.concatenate([x[None], xs])


def fit_per_step(steps: _Steps, x, reference, iters=40, lr=0.1, weight_decay=0.01):
    """The authors' `search_dc`: for each step i >= 2 the ratio minimising the squared error of
    x_{i+1} against reference[i+1], by AdamW from rho = 1, then the step taken with it."""
    opt = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
    one = jnp.ones((), x.dtype)

    def minimise(loss):
        def update(carry, _):
            r, o = carry
            u, o = opt.update(jax.grad(loss)(r), o, r)
            return (optax.apply_updates(r, u), o), None

        (r, _), _ = jax.lax.scan(update, (one, opt.init(one)), None, length=int(iters))
        return jax.lax.stop_gradient(r)

    def step(state, inputs):
        l_s, target = inputs

        def loss(r):
            return jnp.mean((steps.advance(state, l_s, r)[0] - target) ** 2)

        rho = jax.lax.cond(state[3] >= 2, lambda: minimise(loss), lambda: one)
        return steps.advance(state, l_s, rho), rho

    init = samplers.unipc_init(steps.denoise, x, steps.grid)
    state, rhos = jax.lax.scan(step, init, (steps.grid[1:-1], reference[1:-1]))
    if steps.n - 1 >= 2:
        rho_last = minimise(lambda r: jnp.mean((steps.last(state, r) - reference[-1]) ** 2))
    else:
        rho_last = one
    return jnp.append(rhos, rho_last)


def fit_ratios(denoise, x_T, grid, reference, iters=100, lr=0.02, **kwargs):
    """`fit="joint"`: ratios minimising ||dc_unipc(x_T) - reference||^2 (final samples) over a
    handful of starting points, all at once with Adam; kwargs go to `dc_unipc`."""
    grid = jnp.asarray(grid)

    def loss(r):
        return jnp.mean((dc_unipc(denoise, x_T, grid, r, **kwargs) - reference) ** 2)

    opt = optax.adam(lr)

    def update(carry, _):
        r, o = carry
        u, o = opt.update(jax.grad(loss)(r), o)
        return (optax.apply_updates(r, u), o), None

    r = jnp.ones((grid.shape[0] - 1,), grid.dtype)
    (r, _), _ = jax.lax.scan(update, (r, opt.init(r)), None, length=iters)
    return r


@SAMPLERS.register("dc_solver")
def dc_solver(
    denoise,
    x,
    grid,
    key=None,
    *,
    ratios=None,
    fit="per_step",
    fit_iters=40,
    fit_points=10,
    reference_steps=200,
    lr=None,
    weight_decay=0.01,
    order=3,
    variant="bh1",
    lower_order_final=True,
    variable="t",
    schedule=None,
):
    """DC-Solver as a sampler: given `ratios` (one per step), or fitted here (`fit`:
    "per_step" or "joint", `fit_iters` optimiser steps, lr 0.1 per step / 0.01 joint unless `lr`)
    on the first `fit_points` rows of x against `reference_states`. A denoiser that carries
    per-row conditioning (`guidance.ClassifierFree`) gives its first rows by `rows(n)`."""
    check_choice("diffusion.sampler_kwargs.fit", fit, ("per_step", "joint"))
    check_choice("diffusion.sampler_kwargs.order", order, (1, 2, 3))
    check_choice("diffusion.sampler_kwargs.variant", variant, ("bh1", "bh2"))
    n = grid.shape[0] - 1
    times = _times(grid, variable, schedule)
    steps = _Steps(denoise, grid, times, order, variant, bool(lower_order_final))
    if ratios is not None:
        ratios = jnp.asarray(ratios, grid.dtype).reshape(-1)
        if ratios.shape[0] != n:
            raise UserError(
                f"diffusion.sampler_kwargs.ratios: {ratios.shape[0]} ratios for {n} "
                f"sampling steps; give one per step (diffusion.sample_steps)"
            )
    elif fit_iters > 0:
        k = min(int(fit_points), x.shape[0])
        sub = denoise.rows(k) if hasattr(denoise, "rows") else denoise
        ref = jax.lax.stop_gradient(reference_states(sub, x[:k], grid, reference_steps))
        fit_steps = _Steps(sub, grid, times, order, variant, bool(lower_order_final))
        if fit == "per_step":
            lr = 0.1 if lr is None else lr
            ratios = fit_per_step(fit_steps, x[:k], ref, fit_iters, lr, weight_decay)
        else:
            kw = dict(
                times=times, order=order, variant=variant, lower_order_final=lower_order_final
            )
            lr = 0.01 if lr is None else lr
            ratios = fit_ratios(sub, x[:k], grid, ref[-1], int(fit_iters), lr, **kw)
        ratios = jax.lax.stop_gradient(ratios)
    else:
        ratios = jnp.ones((n,), grid.dtype)
    return steps.run(x, ratios)


def _cpr_features(guidance, nfe, num_steps, degree):
    """Design row per step i: (i/N)^k (g/12)^a (n/50)^b for k < degree, a, b <= 2."""
    i = np.arange(num_steps, dtype=np.float64) / num_steps
    g, n = guidance / 12.0, nfe / 50.0
    cols = [i**k * g**a * n**b for k in range(degree) for a in range(3) for b in range(3)]
    return np.stack(cols, axis=1)


def cpr_fit(settings, ratios, degree=3):
    """settings: [(guidance, nfe)], ratios: matching 1-D arrays -> coefficients (degree, 3, 3)."""
    rows = [_cpr_features(g, n, len(r), degree) for (g, n), r in zip(settings, ratios)]
    a, b = np.concatenate(rows), np.concatenate([np.asarray(r, np.float64) for r in ratios])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return coef.reshape(degree, 3, 3)


def cpr_predict(coef, guidance, nfe, num_steps):
    """Ratios for an unseen (guidance, NFE) setting from `cpr_fit` coefficients."""
    return _cpr_features(guidance, nfe, num_steps, coef.shape[0]) @ coef.reshape(-1)

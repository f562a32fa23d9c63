"""DC-Solver: UniPC with dynamic compensation (Zhao et al. 2024, "DC-Solver: Improving
Predictor-Corrector Diffusion Sampler via Dynamic Compensation", arXiv 2409.03755, Sec. 3.2-3.3).

In UniPC the model output m_{i+1} is evaluated at the *predicted* point x^P but then used by the
corrector and the next predictor as if it belonged to the corrected point. DC-Solver replaces it by
the Lagrange interpolant of the last three outputs at a shifted time: with nodes (lambda_{i-1},
lambda_i, lambda_{i+1}), m* = sum_j m_j prod_{k != j} (lambda* - lambda_k)/(lambda_j - lambda_k) at
lambda* = rho_i lambda_{i+1} + (1 - rho_i) lambda_i (the paper interpolates in its timestep
variable; here the grid variable is lambda = logsnr/2). rho = 1 is the identity, so all ratios 1
give UniPC-bh2 exactly; as in the paper the first two steps always use rho = 1.

- `dc_unipc`: UniPC-bh2 (`samplers.unipc_bh2`, the one implementation) with the compensation as
  its hook; `ratios` (one per grid interval) is a traced array, so new ratios do not recompile.
- `dc_solver`, the sampler `diffusion.sampler="dc_solver"`: `ratios` from
  `diffusion.sampler_kwargs.ratios`, or (the default) fitted at sampling time with `fit_ratios` on
  the first `fit_points` starting points against a `reference_steps`-step DPM-Solver++(2M) run.
- `fit_ratios`: the ratios fitted on ~10 starting points against a many-step reference solution of
  the same starting points (the paper fits step by step against the reference trajectory with
  AdamW; here all ratios are fitted jointly on the final-state error with Adam, in a `lax.scan`
  so that fitting can run inside a jitted sampling function).
- Cascade polynomial regression (Sec. 3.3): rho(i) = sum_k c_k(g, n) (i/N)^k with every c_k a
  quadratic polynomial in (g/12) whose coefficients are quadratic in (n/50), g the guidance scale
  and n the NFE: 9 numbers per k. `cpr_fit` solves for them by least squares from ratios fitted at
  a few (g, n) settings; `cpr_predict` returns ratios for an unseen setting.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.diffusion import samplers
from netlab.diffusion.registries import SAMPLERS
from netlab.errors import UserError


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


def compensate(m_s, m0, m_prev, lam_prev, lam_t, lam_s, rho, i):
    """Sec. 3.2: m* = Lagrange interpolant of (m_prev, m0, m_s) at rho lam_s + (1 - rho) lam_t;
    rho = 1 on the first two steps (too few nodes), which returns m_s exactly."""
    rho = jnp.where(i > 1, rho, 1.0)
    safe_prev = jnp.where(i > 0, lam_prev, lam_t - 1.0)  # any distinct node when unused
    at = rho * lam_s + (1.0 - rho) * lam_t
    return lagrange3((safe_prev, lam_t, lam_s), (m_prev, m0, m_s), at)


def dc_unipc(denoise, x, grid, ratios):
    """UniPC-bh2 (order-2 UniP + UniC) with dynamic compensation; `denoise(x, logsnr) -> x0_hat`."""
    return samplers.unipc_bh2(denoise, x, grid, compensate=compensate, ratios=ratios)


def fit_ratios(denoise, x_T, grid, reference, iters=100, lr=0.02):
    """Ratios minimising ||dc_unipc(x_T) - reference||^2 over a handful of starting points x_T."""
    grid = jnp.asarray(grid)

    def loss(r):
        return jnp.mean((dc_unipc(denoise, x_T, grid, r) - reference) ** 2)

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
    fit_iters=40,
    fit_points=10,
    reference_steps=200,
    lr=0.01,
):
    """DC-Solver as a sampler: given `ratios` (one per step), or fitted here (`fit_iters` Adam
    steps) on the first `fit_points` rows of x against a `reference_steps`-step DPM-Solver++(2M)
    solution on a uniform log-SNR grid between the same end points. A denoiser that carries
    per-row conditioning (`guidance.ClassifierFree`) gives its first rows by `rows(n)`."""
    n = grid.shape[0] - 1
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
        fine = jnp.linspace(grid[0], grid[-1], int(reference_steps) + 1)
        reference = jax.lax.stop_gradient(samplers.dpmpp_2m(sub, x[:k], fine))
        ratios = jax.lax.stop_gradient(fit_ratios(sub, x[:k], grid, reference, int(fit_iters), lr))
    return dc_unipc(denoise, x, grid, ratios)


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

"""DBIM: diffusion bridge implicit models (Zheng, He, Zhou, Lu, Zhu & Chen, ICLR 2025).

A non-Markovian sampler for a trained DDBM (`ddbm.py`) bridge denoiser D(x_t, t, x_T), as DDIM is
for diffusion. Its generative process keeps every bridge marginal q(x_t | x0, x_T) =
N(a_t x_T + b_t x0, c_t^2) (a, b, c: `ddbm.bridge_abc`; in DBIM's notation rho = sigma / alpha,
a_t = (alpha_t / alpha_T) rho_t^2 / rho_T^2, b_t = alpha_t (1 - rho_t^2 / rho_T^2),
c_t = alpha_t rho_t sqrt(1 - rho_t^2 / rho_T^2)) for any eta in [0, 1] (Sec. 3, Prop. 3.1), with
the step s -> t (t cleaner) (Eq. 9-10; the authors' `sample_dbim`)

    x0_hat = D(x_s, s, x_T),   omega = eta alpha_t rho_t sqrt(1 - rho_t^2 / rho_s^2),
    k = sqrt(c_t^2 - omega^2) / c_s,
    x_t = (b_t - k b_s) x0_hat + (a_t - k a_s) x_T + k x_s + omega z,

so given the true x0, x_s ~ q(x_s | x0, x_T) gives x_t ~ q(x_t | x0, x_T) exactly (mean
a_t x_T + b_t x0, variance k^2 c_s^2 + omega^2 = c_t^2). eta = 1 is the Markovian bridge
posterior (DDBM's ancestral sampler), eta = 0 deterministic. The start x_T is singular (c_T = 0),
so the first step "boots" with noise: x = a x_T + b D(x_T, t_max) + c z at grid[0] (Sec. 3.3).
As the authors do, no noise is added on the last step. The higher-order DBIM solvers (Sec. 4) are
not implemented.

Section, equation and proposition numbers above are recalled, not yet checked against the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from netlab.diffusion.ddbm import array_module, bridge_abc
from netlab.diffusion.schedules import alpha_sigma
from netlab.registry import check_range


def coefficients(logsnr_s, logsnr_t, logsnr_T, eta):
    """(coef of x0_hat, coef of x_T, k, omega) of the step s -> t (Eq. 9-10); numpy for numpy
    or Python inputs, jax otherwise."""
    xp = array_module(logsnr_s, logsnr_t, logsnr_T, eta)
    logsnr_s, logsnr_t, logsnr_T = (xp.asarray(v) for v in (logsnr_s, logsnr_t, logsnr_T))
    a_s, b_s, c_s = bridge_abc(logsnr_s, logsnr_T)
    a_t, b_t, c_t = bridge_abc(logsnr_t, logsnr_T)
    alpha_t, _ = alpha_sigma(logsnr_t)
    rho_t = xp.exp(-0.5 * logsnr_t)
    omega = eta * alpha_t * rho_t * xp.sqrt(1.0 - xp.exp(logsnr_s - logsnr_t))
    k = xp.sqrt(xp.maximum(c_t**2 - omega**2, 0.0)) / c_s
    return b_t - k * b_s, a_t - k * a_s, k, omega


def sample(denoise, x_T, grid, logsnr_T, key, *, eta=0.0):
    """DBIM from x_T: boot at grid[0] (just above logsnr_T), then one step per grid interval to
    grid[-1] (may be +inf, sigma = 0); `denoise(x, logsnr, x_T) -> x0_hat` (VP coordinates).
    len(grid) denoiser calls in all."""
    if not isinstance(eta, jax.Array):  # a traced eta (vmapped over) is the caller's to check
        check_range("eta", eta, 0.0, 1.0)
    dtype = x_T.dtype
    grid = jnp.asarray(grid, dtype)
    logsnr_T = jnp.asarray(logsnr_T, dtype)
    n = grid.shape[0] - 1
    k0, *keys = jax.random.split(key, n + 1)
    a, b, c = bridge_abc(grid[0], logsnr_T)
    x = a * x_T + b * denoise(x_T, grid[0], x_T) + c * jax.random.normal(k0, x_T.shape, dtype)
    etas = jnp.full((n,), eta, dtype).at[-1].set(0.0)

    def step(x, inputs):
        l_s, l_t, e, k = inputs
        x0 = denoise(x, l_s, x_T).astype(dtype)
        c_x0, c_xT, kk, omega = coefficients(l_s, l_t, logsnr_T, e)
        return c_x0 * x0 + c_xT * x_T + kk * x + omega * jax.random.normal(k, x.shape, dtype), None

    x, _ = jax.lax.scan(step, x, (grid[:-1], grid[1:], etas, jnp.stack(keys)))
    return x

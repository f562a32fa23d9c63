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
As the authors do, no noise is added on the last step.

High-order solvers (Sec. 4, the authors' `sample_dbim_high_order`): at eta = 0 the step above is
the exact solution of the bridge ODE with x0_hat frozen over the step. With lambda = log(b / c)
(the bridge's log signal-to-noise ratio, increasing towards the data) the ODE solution is the
exponential-integrator form (recalled as their Eq. 15-16; derived here)

    x_t = (c_t / c_s) x_s + (a_t - a_s c_t / c_s) x_T + c_t int_{lambda_s}^{lambda_t}
          e^lambda x0_hat(lambda) dlambda,

and a Taylor expansion of x0_hat in lambda around lambda_s, with the derivatives estimated from
the previous steps' x0_hat (multistep, no extra network calls), gives, with h = lambda_t -
lambda_s and c_t e^{lambda_t} = b_t,

    c_t int = b_t [(1 - e^-h) x0_hat + (h - 1 + e^-h) x0_hat' + (h^2/2 - h + 1 - e^-h) x0_hat''],

x0_hat' and x0_hat'' being the derivatives at lambda_s of the polynomial through the last 2
(order 2) or 3 (order 3) values (Newton divided differences on the non-uniform lambda grid).
The first step is order 1 (no history) and, with `lower_order_final` (the authors' default),
so is the last; a grid ending at sigma = 0 (c = 0, lambda = inf) always ends with the order-1
step, which is x0_hat there. Same NFE as `sample`: one per grid point.

Section, equation and proposition numbers above are recalled, not yet checked against the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion.ddbm import array_module, bridge_abc
from netlab.diffusion.schedules import alpha_sigma
from netlab.registry import check_choice, check_range


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


def bridge_lambda(logsnr, logsnr_T):
    """lambda = log(b / c) of the bridge marginal = log(SNR_t - SNR_T) / 2 (b / c = sqrt(SNR_t)
    sqrt(1 - SNR_T / SNR_t)): -inf at logsnr_T, +inf at sigma = 0; numpy for numpy inputs."""
    xp = array_module(logsnr, logsnr_T)
    logsnr = xp.asarray(logsnr)
    return 0.5 * (logsnr + xp.log(-xp.expm1(logsnr_T - logsnr)))


def lambda_grid(num_steps, logsnr_start, logsnr_end, logsnr_T):
    """Log-SNR grid (float64, host) uniform in the bridge's lambda from logsnr_start to logsnr_end:
    the grid the high-order solvers' error analysis assumes (logsnr = log(e^{2 lambda} + SNR_T))."""
    lam = np.linspace(*bridge_lambda(np.array([logsnr_start, logsnr_end]), logsnr_T), num_steps + 1)
    return np.logaddexp(2.0 * lam, logsnr_T)


def sample_high_order(
    denoise, x_T, grid, logsnr_T, key, *, order=2, lower_order_final=True, num_steps=None
):
    """Deterministic multistep DBIM of order 1, 2 or 3 (Sec. 4) from x_T: booting noise at
    grid[0] as `sample`, then one exponential-integrator step per grid interval; len(grid)
    denoiser calls. `order`, `lower_order_final` and `num_steps` may be traced (to vmap over
    them in one compile); `num_steps` < len(grid) - 1 uses grid[: num_steps + 1] and returns
    the state there (the padded steps still call the denoiser, their results are dropped)."""
    if not isinstance(order, jax.Array):
        check_choice("order", order, (1, 2, 3))
    dtype = x_T.dtype
    grid = jnp.asarray(grid, dtype)
    logsnr_T = jnp.asarray(logsnr_T, dtype)
    n = grid.shape[0] - 1
    active = n if num_steps is None else num_steps
    k0 = jax.random.split(key, n + 1)[0]  # the booting noise of `sample` with the same key
    a, b, c = bridge_abc(grid[0], logsnr_T)
    x = a * x_T + b * denoise(x_T, grid[0], x_T) + c * jax.random.normal(k0, x_T.shape, dtype)
    lam = bridge_lambda(grid, logsnr_T)
    zero = jnp.zeros_like(x)

    def step(carry, inputs):
        x, d1, d2, lam1, lam2 = carry  # x0_hat at the last two grid points, newest first
        i, l_s, l_t, lam_s, lam_t = inputs
        a_s, b_s, c_s = bridge_abc(l_s, logsnr_T)
        a_t, b_t, c_t = bridge_abc(l_t, logsnr_T)
        k = jnp.minimum(order, i + 1)
        k = jnp.where(lower_order_final, jnp.minimum(k, active - i), k)
        k = jnp.where(jnp.isfinite(lam_t), k, 1)
        d0 = denoise(x, l_s, x_T).astype(dtype)
        ratio = c_t / c_s
        # e^-h = (b_s / c_s) / (b_t / c_t) (0 at sigma_t = 0); h made finite where unused
        e_mh = ratio * b_s / b_t
        h = jnp.where(k > 1, lam_t - lam_s, 1.0)
        h1 = jnp.where(k > 1, lam_s - lam1, 1.0)
        h2 = jnp.where(k > 2, lam1 - lam2, 1.0)
        dd1 = (d0 - d1) / h1  # divided differences f[s, u1], f[s, u1, u2]
        dd2 = (dd1 - (d1 - d2) / h2) / (h1 + h2)
        deriv = jnp.where(k > 2, dd1 + h1 * dd2, dd1)
        integral = (1.0 - e_mh) * d0
        integral += jnp.where(k > 1, (h + jnp.expm1(-h)) * deriv, zero)
        integral += jnp.where(k > 2, (0.5 * h**2 - h - jnp.expm1(-h)) * 2.0 * dd2, zero)
        x_new = ratio * x + (a_t - a_s * ratio) * x_T + b_t * integral
        new = (x_new, d0, d1, lam_s, lam1)
        return jax.tree.map(lambda a, b: jnp.where(i < active, a, b), new, carry), None

    idx = jnp.arange(n)
    carry = (x, zero, zero, lam[0], lam[0])
    (x, *_), _ = jax.lax.scan(step, carry, (idx, grid[:-1], grid[1:], lam[:-1], lam[1:]))
    return x

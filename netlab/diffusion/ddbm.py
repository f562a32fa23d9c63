"""DDBM: denoising diffusion bridge models (Zhou, Lou, Ermon & Song, ICLR 2024).

A diffusion bridge pins the forward process x_t = alpha_t x0 + sigma_t eps at both ends: x0 is a
data point and x_T its paired source (an edge map, a low-resolution image). Conditioning the
forward process on x_T (Doob's h-transform, Sec. 3) gives the bridge marginal (Eq. 9; App. A)

    q(x_t | x0, x_T) = N(a_t x_T + b_t x0, c_t^2 I),   r = SNR_T / SNR_t,
    a_t = (alpha_t / alpha_T) r,   b_t = alpha_t (1 - r),   c_t^2 = sigma_t^2 (1 - r),

which covers the VE bridge too (alpha = 1, sigma = t: a = t^2/T^2, b = 1 - a, c^2 = t^2 (1 - a)).
A VP bridge is the VE bridge of y = x / alpha with time rho = sigma / alpha and pinned end
y_T = x_T / alpha_T, so the sampler below works in those VE coordinates (as `samplers.heun` and
`ddib.pf_ode` do) on a log-SNR grid.

The model is a denoiser D(x_t, t, x_T) ~ E[x0 | x_t, x_T]; with it (VE coordinates, g^2 = 2 rho)
- h = grad log p(x_T | x_t) = (y_T - y) / (rho_T^2 - rho^2), written here as
  alpha_T (x_T - alpha_T y) / (sigma_T^2 - alpha_T^2 rho^2) so that a pure-noise end (alpha_T = 0,
  log-SNR -inf) gives h = 0 without an infinity;
- the bridge score is s = grad log q(x_t | x_T) = (D - y) / rho^2 + h (Eq. 11 and Thm. 1);
- probability-flow ODE (Eq. 11): dy/drho = -rho (s - 2h) = (y - D) / rho + rho h;
- reverse SDE (Eq. 10): dy = -2 rho (s - h) drho + sqrt(2 rho) dw: the h terms cancel.
The sampler (App. C, "hybrid"; the authors' `churn_step_ratio`) makes each step rho_i -> rho_{i+1}
an Euler-Maruyama SDE step to rho_hat = rho_i + ratio (rho_{i+1} - rho_i), then a Heun ODE step
rho_hat -> rho_{i+1}; ratio = 0 is the pure PF-ODE Heun sampler (which must not start at x_T
itself, where c_T = 0), ratio = 1 pure Euler-Maruyama. With a pure-noise source (alpha_T = 0) the
bridge is ordinary diffusion: a = 0, b = alpha_t, c = sigma_t, h = 0, the ODE sampler is EDM's
Heun and the preconditioning is EDM's (tests/diffusion/test_ddbm.py).

Preconditioning (Sec. 4.1 and App. B; sigma_0, sigma_T the data and source stds, cov their
covariance): A = a^2 sigma_T^2 + b^2 sigma_0^2 + 2 a b cov + c^2, c_in = A^-1/2,
c_skip = (b sigma_0^2 + a cov) / A, c_out = sqrt(a^2 (sigma_T^2 sigma_0^2 - cov^2) + sigma_0^2
c^2) c_in, loss weight 1 / c_out^2; the network also sees x_T (the authors concatenate it on the
channels, unscaled). Differences from the authors' code: time is log-SNR (their network input is
250 ln t), and the last grid point is finite (no closed-form step to sigma = 0).

Section, equation and proposition numbers above are recalled, not yet checked against the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion.schedules import alpha_sigma
from netlab.registry import check_range


def array_module(*xs):
    """jax.numpy if any input is a jax array or tracer, else numpy (host-side float64 checks)."""
    return jnp if any(isinstance(x, jax.Array) for x in xs) else np


def bridge_abc(logsnr_t, logsnr_T):
    """(a_t, b_t, c_t) of q(x_t | x0, x_T) = N(a x_T + b x0, c^2) (VP; logsnr_T may be -inf);
    numpy for numpy or Python inputs, jax otherwise."""
    xp = array_module(logsnr_t, logsnr_T)
    logsnr_t, logsnr_T = xp.asarray(logsnr_t), xp.asarray(logsnr_T)
    a_t, s_t = alpha_sigma(logsnr_t)
    a_T, _ = alpha_sigma(logsnr_T)
    r = xp.exp(logsnr_T - logsnr_t)  # SNR_T / SNR_t
    # alpha_t / alpha_T * r = (sigma_t / sigma_T)^2 alpha_T / alpha_t: finite at alpha_T = 0
    a = (s_t**2 / (1.0 - a_T**2)) * a_T / a_t
    return a, a_t * (1.0 - r), s_t * xp.sqrt(1.0 - r)


def bridge_sample(x0, x_T, eps, logsnr_t, logsnr_T):
    """x_t ~ q(x_t | x0, x_T) from standard normal `eps`."""
    a, b, c = bridge_abc(logsnr_t, logsnr_T)
    return a * x_T + b * x0 + c * eps


def preconditioning(logsnr_t, logsnr_T, sigma_0=0.5, sigma_T=0.5, cov=0.0):
    """(c_skip, c_out, c_in, weight) of the bridge preconditioning (App. B) at log-SNR t."""
    a, b, c = bridge_abc(logsnr_t, logsnr_T)
    big_a = a**2 * sigma_T**2 + b**2 * sigma_0**2 + 2 * a * b * cov + c**2
    c_in = 1.0 / array_module(big_a).sqrt(big_a)
    c_skip = (b * sigma_0**2 + a * cov) / big_a
    c_out = (
        array_module(big_a).sqrt(a**2 * (sigma_T**2 * sigma_0**2 - cov**2) + sigma_0**2 * c**2)
        * c_in
    )
    return c_skip, c_out, c_in, 1.0 / c_out**2


def denoiser(net, logsnr_T, sigma_0=0.5, sigma_T=0.5, cov=0.0):
    """D(x_t, logsnr, x_T) = c_skip x_t + c_out net(c_in x_t, logsnr, x_T)."""

    def denoise(x, logsnr, x_T):
        c_skip, c_out, c_in, _ = preconditioning(logsnr, logsnr_T, sigma_0, sigma_T, cov)
        return c_skip * x + c_out * net(c_in * x, logsnr, x_T)

    return denoise


def loss(denoise, x0, x_T, eps, logsnr_t, logsnr_T, sigma_0=0.5, sigma_T=0.5, cov=0.0):
    """Bridge denoising loss (Eq. 12 with App. B's weight): per-example weighted squared error
    w(t) |D(x_t, t, x_T) - x0|^2 at x_t = a x_T + b x0 + c eps, for (N, ...) arrays; logsnr_t a
    scalar or one per row, shaped to broadcast against x0 (e.g. (N, 1, 1, 1))."""
    x_t = bridge_sample(x0, x_T, eps, logsnr_t, logsnr_T)
    w = preconditioning(logsnr_t, logsnr_T, sigma_0, sigma_T, cov)[3]
    w = jnp.reshape(w, (-1,)) if jnp.ndim(w) else w  # per-row weights (N, 1, ...) -> (N,)
    err = (denoise(x_t, logsnr_t, x_T) - x0) ** 2
    return w * jnp.sum(err.reshape(err.shape[0], -1), axis=-1)


def _fields(denoise, x_T, logsnr_T):
    """Bridge denoiser, ODE velocity and SDE drift in VE coordinates (y, rho)."""
    a_T, s_T = alpha_sigma(logsnr_T)

    def d_ve(y, rho):
        logsnr = -2.0 * jnp.log(rho)
        a, _ = alpha_sigma(logsnr)
        return denoise(a * y, logsnr, x_T).astype(y.dtype)

    def h(y, rho):
        return a_T * (x_T - a_T * y) / (s_T**2 - a_T**2 * rho**2)

    def ode(y, rho):  # dy/drho = -rho (s - 2h), s = (D - y)/rho^2 + h
        return (y - d_ve(y, rho)) / rho + rho * h(y, rho)

    return d_ve, ode


def sample(denoise, x, x_T, grid, logsnr_T, key=None, *, churn_step_ratio=0.33):
    """DDBM's hybrid sampler from `x` at log-SNR grid[0] (usually x = x_T, grid[0] just above
    logsnr_T) to grid[-1] (finite), for `denoise(x, logsnr, x_T) -> x0_hat` (VP coordinates).
    3 denoiser calls per step (1 with ratio 0 and 1 skipped: 2 and 1)."""
    check_range("churn_step_ratio", churn_step_ratio, 0.0, 1.0)
    dtype = x.dtype
    grid = jnp.asarray(grid, dtype)
    logsnr_T = jnp.asarray(logsnr_T, dtype)
    x_T = jnp.asarray(x_T, dtype)
    rho = jnp.exp(-0.5 * grid)
    if churn_step_ratio > 0:
        keys = jax.random.split(key if key is not None else jax.random.key(0), grid.shape[0] - 1)
    else:  # deterministic: no keys to split (and no PRNG to compile)
        keys = jnp.zeros(grid.shape[0] - 1)
    d_ve, ode = _fields(denoise, x_T, logsnr_T)
    y = x / alpha_sigma(grid[0])[0]

    def step(y, inputs):
        r_cur, r_next, k = inputs
        if churn_step_ratio > 0:  # Euler-Maruyama of the reverse SDE: drift -2 rho (D - y)/rho^2
            r_hat = r_cur + churn_step_ratio * (r_next - r_cur)
            dr = r_cur - r_hat
            noise = jax.random.normal(k, y.shape, dtype)
            y = y + 2.0 * dr / r_cur * (d_ve(y, r_cur) - y) + jnp.sqrt(2.0 * r_cur * dr) * noise
        else:
            r_hat = r_cur
        if churn_step_ratio < 1:  # Heun on the probability-flow ODE
            d1 = ode(y, r_hat)
            y_euler = y + (r_next - r_hat) * d1
            y = y + (r_next - r_hat) * 0.5 * (d1 + ode(y_euler, r_next))
        return y, None

    y, _ = jax.lax.scan(step, y, (rho[:-1], rho[1:], keys))
    return alpha_sigma(grid[-1])[0] * y

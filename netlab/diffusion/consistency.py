"""Consistency distillation (Song, Dhariwal, Chen & Sutskever, ICML 2023, "Consistency Models").

A consistency function maps any point of a probability-flow ODE trajectory to the trajectory's
data end: f(x_sigma, sigma) = x_eps. It is parameterised so that the boundary condition
f(x, eps) = x holds by construction (Sec. 3, Eq. 5; App. C): in the VE view x = x0 + sigma n
(sigma = sigma_ve = exp(-logsnr/2), eps = sigma_min),

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, ln(sigma) / 4),
    c_skip = sigma_d^2 / ((sigma - eps)^2 + sigma_d^2),
    c_out = sigma_d (sigma - eps) / sqrt(sigma_d^2 + sigma^2),
    c_in = 1 / sqrt(sigma^2 + sigma_d^2),

so at sigma = eps, c_skip = 1 and c_out = 0 exactly (in floating point too).

Distillation (Alg. 2): on the descending Karras grid sigma_1 = eps < ... < sigma_N = sigma_max
(rho = 7), draw n, x_{n+1} = x0 + sigma_{n+1} z, take one teacher step of the PF-ODE
sigma_{n+1} -> sigma_n (Heun with the teacher denoiser, EDM's solver, the authors' choice), and
minimise d(f_theta(x_{n+1}, sigma_{n+1}), sg f_theta-(x_hat_n, sigma_n)) with theta- an EMA of
theta. Here d is the squared L2 distance (the paper's LPIPS is for images) and the teacher is any
`denoise(x, logsnr) -> x0_hat` in the samplers' VP convention, e.g. the exact Gaussian-mixture
oracle. Sampling (Alg. 1): one step x = f(sigma_max z, sigma_max); multistep adds fresh noise
x + sqrt(tau^2 - eps^2) z and applies f again at each tau of a decreasing list.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion.schedules import alpha_sigma


def scalings(sigma, sigma_data=0.5, sigma_min=0.002):
    """(c_skip, c_out, c_in, c_noise) of the consistency parameterisation (App. C); numpy for
    a numpy or Python `sigma`, jax otherwise."""
    xp = jnp if isinstance(sigma, jax.Array) else np  # numpy in, numpy out (host-side fits)
    d2 = sigma_data**2
    c_skip = d2 / ((sigma - sigma_min) ** 2 + d2)
    c_out = sigma_data * (sigma - sigma_min) / xp.sqrt(d2 + sigma**2)
    c_in = 1.0 / xp.sqrt(sigma**2 + d2)
    return c_skip, c_out, c_in, 0.25 * xp.log(sigma)


def consistency_fn(net, sigma_data=0.5, sigma_min=0.002):
    """f(params, x, sigma) = c_skip x + c_out net(params, c_in x, c_noise) (VE coordinates)."""

    def f(params, x, sigma):
        c_skip, c_out, c_in, c_noise = scalings(sigma, sigma_data, sigma_min)
        return c_skip * x + c_out * net(params, c_in * x, c_noise)

    return f


def karras_sigmas(num: int, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The N-point grid sigma_1 = sigma_min < ... < sigma_N = sigma_max (float64, host)."""
    i = np.arange(num) / (num - 1)
    return (sigma_min ** (1 / rho) + i * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho


def teacher_step(denoise, x, sigma, sigma_next):
    """One Heun step of the PF-ODE dx/dsigma = (x - D(x, sigma)) / sigma in VE coordinates,
    for a VP denoiser `denoise(x, logsnr)` (Karras et al. 2022, Alg. 1)."""

    def d_ve(x, s):
        logsnr = -2.0 * jnp.log(s)
        return denoise(alpha_sigma(logsnr)[0] * x, logsnr).astype(x.dtype)

    d1 = (x - d_ve(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d1
    return x + (sigma_next - sigma) * 0.5 * (
        d1 + (x_euler - d_ve(x_euler, sigma_next)) / sigma_next
    )


def distillation_loss(f, params, target_params, denoise, x0, z, sigma_next, sigma):
    """Per-example CD loss (Alg. 2, d = squared L2) for the grid pair sigma < sigma_next:
    |f(x_{n+1}, sigma_{n+1}) - sg f^-(x_hat_n, sigma_n)|^2 with x_{n+1} = x0 + sigma_{n+1} z."""
    x_next = x0 + sigma_next * z
    x_hat = teacher_step(denoise, x_next, sigma_next, sigma)
    target = jax.lax.stop_gradient(f(target_params, x_hat, sigma))
    err = (f(params, x_next, sigma_next) - target) ** 2
    return jnp.sum(err.reshape(err.shape[0], -1), axis=-1)


def sample(f, params, z, taus, key=None, sigma_min=0.002):
    """Multistep consistency sampling (Alg. 1): x = f(taus[0] z, taus[0]), then for each later
    tau, x = f(x + sqrt(tau^2 - eps^2) z', tau). len(taus) = number of network evaluations."""
    x = f(params, taus[0] * z, taus[0])
    if len(taus) == 1:
        return x
    keys = jax.random.split(key if key is not None else jax.random.key(0), len(taus) - 1)
    for tau, k in zip(taus[1:], keys):
        noise = jax.random.normal(k, z.shape, z.dtype)
        x = f(params, x + jnp.sqrt(tau**2 - sigma_min**2) * noise, tau)
    return x

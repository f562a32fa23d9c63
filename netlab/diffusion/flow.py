"""Flow matching / rectified flow on the log-SNR core.

Lipman et al. 2023, "Flow Matching for Generative Modeling" (the conditional optimal-transport
path, Eq. 20-23 with sigma_min = 0); Liu et al. 2023, "Flow Straight and Fast" (rectified flow,
Eq. 1); Esser et al. 2024, "Scaling Rectified Flow Transformers" (SD3, Sec. 3.1, t = 0 data):

    z_t = (1 - t) x0 + t eps,   velocity target v = eps - x0,   L = E_t ||v_hat(z_t, t) - v||^2,

with t drawn logit-normal, t = sigmoid(m + s n), n ~ N(0, 1) (SD3 Eq. 19; m = 0, s = 1 by
default: `diffusion.time_sampling="logit_normal"` with `p_mean`, `p_std`).

The path is the VP process of the rest of the package in other coordinates: its log-SNR is
2 log((1 - t)/t) (the `rectified_flow` schedule), and z_t = x_vp / (alpha + sigma) with
t = sigma / (alpha + sigma). So a velocity network is one more parameterisation (`flow`:
x0_hat = z - t v_hat) and every sampler runs a flow model; `denoiser_from_velocity` and
`velocity_from_denoiser` convert the other way round. The velocity loss is the x0 loss with
weight 1/t^2 = (1 + exp(logsnr/2))^2 (`diffusion.weighting="flow"`), since
v_hat - v = (x0 - x0_hat) / t. Conversions (t in (0, 1)):

    x0 = z - t v,   eps = z + (1 - t) v,   v = (z - x0) / t = (eps - z) / (1 - t) = eps - x0.

Samplers `flow_euler` and `flow_heun` integrate dz/dt = v(z, t) on the task's log-SNR grid (each
point mapped to its t); Heun's last step onto t = 0 is Euler's (x0_hat, as EDM's Algorithm 2).
Euler on this path is DDIM (eta = 0) step for step: both keep x0_hat and eps_hat fixed over a
step. SiT (Ma et al. 2024) runs time the other way (t = 1 data, u = -v); here t = 0 is data.
"""

import jax
import numpy as np

from netlab.diffusion import schedules
from netlab.diffusion.registries import PARAMETERIZATIONS, SAMPLERS, SCHEDULES, WEIGHTINGS


def t_from_logsnr(logsnr):
    """The flow time of a log-SNR: SNR = ((1 - t)/t)^2, t = sigmoid(-logsnr / 2)."""
    xp = schedules._xp(logsnr)
    return schedules.sigmoid(-0.5 * logsnr, xp)


def logsnr_from_t(t):
    """2 log((1 - t)/t); +inf at t = 0 (data) and -inf at t = 1 (noise), without numpy warnings."""
    xp = schedules._xp(t)
    if xp is np:
        with np.errstate(divide="ignore"):
            return 2.0 * (np.log1p(-t) - np.log(t))
    return 2.0 * (xp.log1p(-t) - xp.log(t))


def vp_scale(t):
    """x_vp = vp_scale(t) * z_t = z_t / sqrt((1 - t)^2 + t^2)."""
    xp = schedules._xp(t)
    return 1.0 / xp.sqrt((1.0 - t) ** 2 + t**2)


def x0_from_velocity(z, v, t):
    return z - t * v


def eps_from_velocity(z, v, t):
    return z + (1.0 - t) * v


def velocity_from_x0(z, x0, t):
    return (z - x0) / t


def velocity_from_eps(z, eps, t):
    return (eps - z) / (1.0 - t)


def velocity_target(x0, eps):
    return eps - x0


@SCHEDULES.register("rectified_flow")
def rectified_flow(s, t, xp):
    """log-SNR of z_t = (1 - t) x0 + t eps: 2 log((1 - t)/t), +-inf at the ends (clipped by the
    Schedule)."""
    return logsnr_from_t(t)


@PARAMETERIZATIONS.register("flow")
class Flow:
    """The network sees z_t = x_vp / (alpha + sigma) and predicts the velocity eps - x0."""

    @staticmethod
    def network_input(x_t, alpha, sigma, sigma_data=0.5):
        return x_t / (alpha + sigma)

    @staticmethod
    def denoised(x_t, out, alpha, sigma, sigma_data=0.5):
        t = sigma / (alpha + sigma)
        return x0_from_velocity(x_t / (alpha + sigma), out, t)


@WEIGHTINGS.register("flow")
def flow_weight(logsnr, gamma, sigmoid_bias, sigma_data):
    """||v_hat - v||^2 = ||x0_hat - x0||^2 / t^2, 1/t = 1 + exp(logsnr / 2)."""
    return (1.0 + schedules._xp(logsnr).exp(0.5 * logsnr)) ** 2


def velocity_from_denoiser(denoise):
    """v(z, t) of a data-prediction model `denoise(x_vp, logsnr) -> x0_hat`, for 0 < t < 1."""

    def velocity(z, t):
        x0 = denoise(z * vp_scale(t), logsnr_from_t(t))
        return velocity_from_x0(z, x0, t)

    return velocity


def denoiser_from_velocity(velocity):
    """`denoise(x_vp, logsnr) -> x0_hat` of a velocity model `velocity(z, t)`, for any sampler."""

    def denoise(x, logsnr):
        t = t_from_logsnr(logsnr)
        z = x / vp_scale(t)
        return x0_from_velocity(z, velocity(z, t), t)

    return denoise


def _flow_times(x, grid):
    g = grid.astype(x.dtype)
    return t_from_logsnr(g)


def _integrate(denoise, x, grid, heun: bool):
    ts = _flow_times(x, grid)
    velocity = velocity_from_denoiser(denoise)
    z = x / vp_scale(ts[0])

    def step(z, inputs):
        t, s = inputs
        v = velocity(z, t)
        z_euler = z + (s - t) * v
        if not heun:
            return z_euler, None

        def second_order(_):
            return z + (s - t) * 0.5 * (v + velocity(z_euler, s))

        return jax.lax.cond(s > 0, second_order, lambda _: z_euler, None), None

    z, _ = jax.lax.scan(step, z, (ts[:-1], ts[1:]))
    return z * vp_scale(ts[-1])


@SAMPLERS.register("flow_euler")
def flow_euler(denoise, x, grid, key=None):
    """Euler on dz/dt = v(z, t) (rectified flow's sampler); x in VP coordinates in and out."""
    return _integrate(denoise, x, grid, heun=False)


@SAMPLERS.register("flow_heun")
def flow_heun(denoise, x, grid, key=None):
    """Heun (explicit trapezoid) on dz/dt = v(z, t); Euler onto t = 0."""
    return _integrate(denoise, x, grid, heun=True)


flow_heun.evals_per_step = 2
flow_heun.evals_saved_at_zero = 1

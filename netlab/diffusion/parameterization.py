"""Conversions between what a network predicts (eps, x0, v, EDM's F) and the denoised estimate.

With x_t = alpha x0 + sigma eps (alpha^2 + sigma^2 = 1):
- eps:  x0 = (x_t - sigma eps) / alpha
- v:    v = alpha eps - sigma x0  =>  x0 = alpha x_t - sigma v  (Salimans & Ho 2022, Eq. in Sec. 4)
- edm:  D = c_skip x + c_out F(c_in x, c_noise) in the VE view x_ve = x_t / alpha, sigma_ve =
        sigma / alpha (Karras et al. 2022, Eq. 7 and Table 1), sigma_data = 0.5 by default.
All functions take alpha, sigma broadcastable to x. Each parameterisation is a class registered in
`registries.PARAMETERIZATIONS` (`diffusion.parameterization`) with static `network_input` (what the
network sees) and `denoised` (x0 from the network output).
"""

import jax.numpy as jnp

from netlab.diffusion import schedules
from netlab.diffusion.registries import PARAMETERIZATIONS


def x0_from_eps(x_t, eps, alpha, sigma):
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    return (x_t - alpha * x0) / sigma


def x0_from_v(x_t, v, alpha, sigma):
    return alpha * x_t - sigma * v


def v_from_x0_eps(x0, eps, alpha, sigma):
    return alpha * eps - sigma * x0


def edm_scalings(sigma_ve, sigma_data=0.5):
    """(c_skip, c_out, c_in, c_noise) of EDM's preconditioning for VE noise level sigma_ve."""
    s2, d2 = sigma_ve**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma_ve * sigma_data / jnp.sqrt(s2 + d2)
    c_in = 1.0 / jnp.sqrt(s2 + d2)
    c_noise = jnp.log(sigma_ve) / 4.0
    return c_skip, c_out, c_in, c_noise


class _Plain:
    """The network sees x_t itself."""

    @staticmethod
    def network_input(x_t, alpha, sigma, sigma_data=0.5):
        return x_t


@PARAMETERIZATIONS.register("eps")
class Eps(_Plain):
    @staticmethod
    def denoised(x_t, out, alpha, sigma, sigma_data=0.5):
        return x0_from_eps(x_t, out, alpha, sigma)


@PARAMETERIZATIONS.register("x0")
class X0(_Plain):
    @staticmethod
    def denoised(x_t, out, alpha, sigma, sigma_data=0.5):
        return out


@PARAMETERIZATIONS.register("v")
class V(_Plain):
    @staticmethod
    def denoised(x_t, out, alpha, sigma, sigma_data=0.5):
        return x0_from_v(x_t, out, alpha, sigma)


@PARAMETERIZATIONS.register("edm")
class Edm:
    """EDM's preconditioning: the network sees c_in x_ve and predicts F."""

    @staticmethod
    def network_input(x_t, alpha, sigma, sigma_data=0.5):
        _, _, c_in, _ = edm_scalings(sigma / alpha, sigma_data)
        return c_in * x_t / alpha

    @staticmethod
    def denoised(x_t, out, alpha, sigma, sigma_data=0.5):
        c_skip, c_out, _, _ = edm_scalings(sigma / alpha, sigma_data)
        return c_skip * (x_t / alpha) + c_out * out


def network_input(x_t, alpha, sigma, kind, sigma_data=0.5):
    """What the network sees under parameterisation `kind`: x_t itself, or EDM's c_in * x_ve."""
    return PARAMETERIZATIONS.get(kind).network_input(x_t, alpha, sigma, sigma_data)


def denoised(x_t, out, alpha, sigma, kind, sigma_data=0.5):
    """x0 estimate from the raw network output `out` under parameterisation `kind`."""
    return PARAMETERIZATIONS.get(kind).denoised(x_t, out, alpha, sigma, sigma_data)


def timestep_denoiser(net, schedule, kind: str = "eps", integer: bool = True):
    """`denoise(x, logsnr) -> x0_hat` for `net(x, timesteps) -> eps | v` trained on the integer
    timesteps 0..T-1 of `schedule` (T = `num_train_steps`; `linear` is DDPM's / Stable Diffusion's
    table). The log-SNR is mapped back to its timestep (`schedules.timesteps_from_logsnr`, rounded
    to the nearest integer with `integer`), so on a `leading`/`trailing`/`linspace` grid the
    network sees exactly diffusers' timesteps; x0 = (x - sigma eps)/alpha or alpha x - sigma v with
    alpha, sigma of the grid's log-SNR (the training table's values)."""
    convert = PARAMETERIZATIONS.get(kind, key="parameterization")

    def denoise(x, logsnr):
        steps = schedules.timesteps_from_logsnr(schedule, logsnr)
        steps = jnp.round(steps) if integer else steps
        alpha, sigma = schedules.alpha_sigma(jnp.asarray(logsnr, x.dtype))
        out = net(x, jnp.broadcast_to(steps, (x.shape[0],)))
        return convert.denoised(x, out, alpha, sigma)

    return denoise

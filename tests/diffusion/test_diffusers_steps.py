"""netlab's samplers on diffusers' integer-timestep grids equal numpy transcriptions of diffusers'
scheduler `step` formulas (written from the equations of DDIMScheduler, DPMSolverMultistepScheduler
with algorithm "dpmsolver++" / midpoint, UniPCMultistepScheduler bh2 and HeunDiscreteScheduler,
defaults: order 2, lower_order_final, final_sigmas_type "zero", set_alpha_to_one), in float64,
for an eps network on DDPM's linear-beta table run through `parameterization.timestep_denoiser`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import parameterization, samplers, schedules
from netlab.diffusion.oracle import GaussianMixture

T = 1000
SCHED = schedules.Schedule("linear")
AC = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))  # alphas_cumprod
GMM = GaussianMixture(
    np.array([[-1.0, 0.5], [1.0, -0.5]]), np.array([[0.5, 0.4], [0.3, 0.5]]), np.array([0.4, 0.6])
)
N = 6


def eps_net(x, timesteps):
    """An eps network on integer timesteps: the mixture's exact eps at alphas_cumprod[t]."""
    abar = jnp.asarray(AC, x.dtype)[timesteps.astype(jnp.int32)][:, None]
    logsnr = jnp.log(abar[0, 0]) - jnp.log1p(-abar[0, 0])
    x0 = GMM.denoise(x, logsnr)
    return (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)


def eps_np(x, t):
    return np.asarray(eps_net(jnp.asarray(x), jnp.full((x.shape[0],), t)), np.float64)


def ve_sigmas(ts, final=0.0):
    return np.append(np.sqrt((1.0 - AC) / AC)[ts], final)


def vp(sig):
    """diffusers' _sigma_to_alpha_sigma_t and lambda = log alpha - log sigma (inf at sigma 0)."""
    alpha = 1.0 / np.sqrt(sig**2 + 1.0)
    with np.errstate(divide="ignore"):
        return alpha, sig * alpha, np.log(alpha) - np.log(sig * alpha)


def ddim_ref(x, ts, eta=0.0, noises=None):
    for j, t in enumerate(ts):
        prev = t - T // len(ts)
        a_t, a_p = AC[t], (AC[prev] if prev >= 0 else 1.0)
        eps = eps_np(x, t)
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        std = eta * np.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
        x = np.sqrt(a_p) * x0 + np.sqrt(1 - a_p - std**2) * eps
        x = x + (std * noises[j] if eta else 0.0)
    return x


def dpmpp_ref(x, ts, final=0.0):
    sig = ve_sigmas(ts, final)
    outs, n = [], len(ts)
    for i, t in enumerate(ts):
        a_s, s_s, lam_s = vp(sig[i])
        a_t, s_t, lam_t = vp(sig[i + 1])
        outs.append((x - s_s * eps_np(x, t)) / a_s)
        h = lam_t - lam_s
        lower_final = i == n - 1 and (n < 15 or final == 0.0)
        x_next = (s_t / s_s) * x - a_t * (np.exp(-h) - 1.0) * outs[-1]
        if i > 0 and not lower_final:  # midpoint 2M
            r0 = (lam_s - vp(sig[i - 1])[2]) / h
            d1 = (outs[-1] - outs[-2]) / r0
            x_next = x_next - 0.5 * a_t * (np.exp(-h) - 1.0) * d1
        x = x_next
    return x


def _uni_terms(h, order, rks):
    hh = -h
    h_phi_1 = np.expm1(hh)
    h_phi_k, fact, b_h = h_phi_1 / hh - 1.0, 1, np.expm1(hh)
    r, b = [], []
    for i in range(1, order + 1):
        r.append(np.power(rks, i - 1))
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return h_phi_1, b_h, np.array(r), np.array(b)


def unipc_ref(x, ts):
    sig = ve_sigmas(ts)
    lam = [vp(s)[2] for s in sig]
    outs, n, last, this_order, lower = [], len(ts), None, 1, 0
    for i, t in enumerate(ts):
        a, s, _ = vp(sig[i])
        m_t = (x - s * eps_np(x, t)) / a
        if last is not None:  # UniC with the previous step's order, m0 = previous output
            h = lam[i] - lam[i - 1]
            rks = [(lam[i - 1 - k] - lam[i - 1]) / h for k in range(1, this_order)]
            d1s = [(outs[-1 - k] - outs[-1]) / rk for k, rk in zip(range(1, this_order), rks)]
            h_phi_1, b_h, r, b = _uni_terms(h, this_order, np.array(rks + [1.0]))
            rhos = [0.5] if this_order == 1 else np.linalg.solve(r, b)
            a_t, s_t, _ = vp(sig[i])
            corr = sum(rho * d for rho, d in zip(rhos[:-1], d1s)) + rhos[-1] * (m_t - outs[-1])
            x = s_t / vp(sig[i - 1])[1] * last - a_t * h_phi_1 * outs[-1] - a_t * b_h * corr
        outs.append(m_t)
        this_order = min(2, n - i, lower + 1)
        last = x
        h = lam[i + 1] - lam[i]
        a_t, s_t, _ = vp(sig[i + 1])
        h_phi_1, b_h, _, _ = _uni_terms(h, 1, np.array([1.0]))
        x = s_t / vp(sig[i])[1] * x - a_t * h_phi_1 * outs[-1]
        if this_order == 2:  # UniP-2: rho_p = 1/2
            rk = (lam[i - 1] - lam[i]) / h
            x = x - a_t * b_h * 0.5 * (outs[-2] - outs[-1]) / rk
        lower = min(lower + 1, 2)
    return x


def heun_ref(x, ts):
    sig = ve_sigmas(ts)
    x = x * np.sqrt(sig[0] ** 2 + 1)  # init_noise_sigma: the VE coordinates
    for i in range(len(ts)):
        s, s_next = sig[i], sig[i + 1]
        d = (x - (x - s * eps_np(x / np.sqrt(s**2 + 1), ts[i]))) / s
        if s_next == 0:  # the timesteps end: a first-order step
            x = x + d * (s_next - s)
            continue
        x_e = x + d * (s_next - s)
        eps2 = eps_np(x_e / np.sqrt(s_next**2 + 1), ts[i + 1])
        d2 = (x_e - (x_e - s_next * eps2)) / s_next
        x = x + 0.5 * (d + d2) * (s_next - s)
    return x


def test_spacings_are_diffusers_timesteps():
    shift = schedules.Schedule("linear", steps_offset=1)
    expect = {
        "trailing": [999, 749, 499, 249],
        "linspace": [999, 749, 500, 250],
        "leading": [801, 601, 401, 201],
        "ddim_leading": [751, 501, 251, 1],
        "ddim_linspace": [999, 666, 333, 0],
    }
    for kind, steps in expect.items():
        grid = schedules.sampling_grid(shift, 4, kind)
        assert grid.shape == (5,) and np.isposinf(grid[-1])
        np.testing.assert_allclose(grid[:-1], np.log(AC[steps]) - np.log1p(-AC[steps]), rtol=1e-12)
        np.testing.assert_allclose(schedules.timesteps_from_logsnr(shift, grid[:-1]), steps)


def _run(method, grid, x, **kw):
    denoise = parameterization.timestep_denoiser(eps_net, SCHED, "eps")
    return np.asarray(samplers.sample(denoise, x, jnp.asarray(grid), method, finish=False, **kw))


@pytest.mark.parametrize(
    "method,ref,kinds",
    [
        ("dpmpp_2m", dpmpp_ref, ("leading", "linspace", "trailing")),
        ("unipc", unipc_ref, ("leading", "linspace", "trailing")),
        ("heun", heun_ref, ("trailing", "ddim_leading")),
        ("ddim", ddim_ref, ("trailing",)),
    ],
)
def test_sampler_equals_diffusers_step(method, ref, kinds):
    tol = 1e-9
    n = 5 if method == "ddim" else N  # DDIMScheduler steps to t - T // n: the next point if n | T
    with jax.enable_x64(True):
        x = np.asarray(jax.random.normal(jax.random.key(0), (8, 2), jnp.float64))
        for kind in kinds:
            grid = schedules.sampling_grid(SCHED, n, kind)
            ts = schedules.GRIDS.get(kind).timesteps(T, n, 0).astype(int)
            np.testing.assert_allclose(_run(method, grid, x), ref(x, ts), rtol=tol, atol=tol)
        if method == "dpmpp_2m":  # final sigma of timestep 0, fewer than 15 steps: still order 1
            grid = np.append(grid[:-1], SCHED.logsnr(0.0))
            want = dpmpp_ref(x, ts, final=np.sqrt((1 - AC[0]) / AC[0]))
            np.testing.assert_allclose(_run(method, grid, x), want, rtol=1e-9, atol=1e-9)
        if method == "ddim":  # eta = 1 with the same noise draws
            key = jax.random.key(3)
            keys = jax.random.split(key, n)
            noises = [np.asarray(jax.random.normal(k, x.shape, jnp.float64)) for k in keys]
            got = _run(method, grid, x, key=key, eta=1.0)
            np.testing.assert_allclose(got, ddim_ref(x, ts, 1.0, noises), rtol=1e-9, atol=1e-9)


def test_timestep_denoiser_recovers_the_oracle_from_eps_and_v():
    """An eps or v network on integer timesteps, read through the adapter at the log-SNR of its
    timesteps (and between them, unrounded), gives back the mixture's x0."""

    def v_net(x, timesteps):
        abar = jnp.asarray(AC, x.dtype)[timesteps.astype(jnp.int32)][:, None]
        eps = eps_net(x, timesteps)
        x0 = (x - jnp.sqrt(1 - abar) * eps) / jnp.sqrt(abar)
        return jnp.sqrt(abar) * eps - jnp.sqrt(1 - abar) * x0

    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (8, 2), jnp.float64)
        for kind, net in (("eps", eps_net), ("v", v_net)):
            denoise = parameterization.timestep_denoiser(net, SCHED, kind)
            for k in (999, 500, 37, 0):
                logsnr = jnp.asarray(np.log(AC[k]) - np.log1p(-AC[k]))
                np.testing.assert_allclose(
                    denoise(x, logsnr), GMM.denoise(x, logsnr), rtol=1e-10, atol=1e-10
                )
        steps = schedules.timesteps_from_logsnr(SCHED, jnp.asarray(0.5 * (-2.0 + -2.1)))
        assert 0.0 < float(steps) < 999.0 and float(steps) != round(float(steps))

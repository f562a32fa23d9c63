"""PCG: without corrector it is conditional DDIM; with many corrector steps the samples follow the
closed-form tilted Gaussian p_t(x|c)^gamma p_t(x)^(1-gamma) at the last level."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import cfg_pc, samplers, schedules
from netlab.diffusion.oracle import GaussianMixture

MU_C, S_C, MU_U, S_U = 1.0, 0.5, -0.5, 1.0
COND = GaussianMixture(np.array([[MU_C]]), np.array([[S_C]]), np.array([1.0]))
UNCOND = GaussianMixture(np.array([[MU_U]]), np.array([[S_U]]), np.array([1.0]))
GRID = jnp.asarray(
    schedules.sampling_grid(
        schedules.Schedule("cosine_shifted", logsnr_min=-8.0, logsnr_max=0.0), 6, "uniform_logsnr"
    ),
    jnp.float32,
)
run = jax.jit(
    lambda x, gamma, k: cfg_pc.pcg(COND.denoise, UNCOND.denoise, x, GRID, k, gamma, 200, 0.05)
)


def test_no_corrector_is_conditional_ddim():
    x = jax.random.normal(jax.random.key(0), (16, 1))
    out = cfg_pc.pcg(COND.denoise, UNCOND.denoise, x, GRID, jax.random.key(1), 3.0, num_corrector=0)
    np.testing.assert_allclose(
        out, samplers.sample(COND.denoise, x, GRID, "ddim", finish=False), rtol=1e-5, atol=1e-6
    )
    guided = cfg_pc.pcg(
        COND.denoise,
        UNCOND.denoise,
        x,
        GRID,
        jax.random.key(1),
        3.0,
        num_corrector=0,
        predictor_scale=2.0,
    )
    cfg = lambda z, l: UNCOND.denoise(z, l) + 2.0 * (COND.denoise(z, l) - UNCOND.denoise(z, l))  # noqa: E731
    np.testing.assert_allclose(
        guided, samplers.sample(cfg, x, GRID, "ddim", finish=False), rtol=1e-4, atol=1e-5
    )
    assert float(jnp.abs(guided - out).max()) > 1e-3


def test_corrector_samples_the_tilted_marginal():
    lam = float(GRID[-1])
    a2, s2 = 1 / (1 + np.exp(-lam)), 1 / (1 + np.exp(lam))
    vc, vu = a2 * S_C**2 + s2, a2 * S_U**2 + s2
    x = jax.random.normal(jax.random.key(2), (4000, 1))
    for gamma in (1.0, 2.0):  # gamma = 1: plain conditional marginal
        prec = gamma / vc + (1 - gamma) / vu
        mean = (gamma * np.sqrt(a2) * MU_C / vc + (1 - gamma) * np.sqrt(a2) * MU_U / vu) / prec
        out = np.asarray(run(x, jnp.float32(gamma), jax.random.key(3)))[:, 0]
        # Langevin with step eps has stationary variance v / (1 - eps / (2 v)): tolerance covers it.
        np.testing.assert_allclose(out.mean(), mean, atol=0.05)
        np.testing.assert_allclose(out.var(), 1 / prec, rtol=0.08)
    assert (
        abs(cfg_pc.gamma_for_cfg_ddpm(1.0) - 1.0) < 1e-12 and cfg_pc.gamma_for_cfg_ddpm(2.0) == 3.0
    )

"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024): the
velocity <-> x0/eps conversions, the path as VP coordinates, the velocity loss as a weighting, the
exact velocity of the Gaussian-mixture oracle integrated to the exact ODE endpoint, Euler = DDIM,
and the logit-normal time sampler against its closed-form CDF."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from netlab.diffusion import flow, losses, samplers, schedules
from netlab.diffusion.oracle import GaussianMixture, gaussian_ode_solution
from netlab.diffusion.registries import PARAMETERIZATIONS


def test_conversions_round_trip_and_match_the_vp_core():
    rng = np.random.default_rng(0)
    x0, eps, other = rng.standard_normal((3, 5, 4))
    t = rng.uniform(0.01, 0.99, (5, 1))
    z = (1 - t) * x0 + t * eps
    v = flow.velocity_target(x0, eps)
    np.testing.assert_allclose(flow.x0_from_velocity(z, v, t), x0, atol=1e-12)
    np.testing.assert_allclose(flow.eps_from_velocity(z, v, t), eps, atol=1e-12)
    np.testing.assert_allclose(flow.velocity_from_x0(z, x0, t), v, atol=1e-11)
    np.testing.assert_allclose(flow.velocity_from_eps(z, eps, t), v, atol=1e-11)
    logsnr = flow.logsnr_from_t(t)
    np.testing.assert_allclose(flow.t_from_logsnr(logsnr), t, atol=1e-14)
    sched = schedules.Schedule("rectified_flow", logsnr_min=-40, logsnr_max=40)
    np.testing.assert_allclose(sched.logsnr(t), logsnr, atol=1e-12)
    # The path is the VP process rescaled: vp_scale(t) z = alpha x0 + sigma eps at its log-SNR.
    alpha, sigma = schedules.alpha_sigma(logsnr)
    x_vp = alpha * x0 + sigma * eps
    np.testing.assert_allclose(flow.vp_scale(t) * z, x_vp, atol=1e-12)
    # The `flow` parameterisation: the network sees z and x0_hat follows from a velocity output.
    par = PARAMETERIZATIONS.get("flow")
    np.testing.assert_allclose(par.network_input(x_vp, alpha, sigma), z, atol=1e-12)
    np.testing.assert_allclose(par.denoised(x_vp, v, alpha, sigma), x0, atol=1e-12)
    # The `flow` weighting turns the x0 loss into the velocity loss, ||v_hat - v||^2.
    v_hat = v + other
    x0_hat = par.denoised(x_vp, v_hat, alpha, sigma)
    w = losses.weight(logsnr[:, 0], "flow")
    np.testing.assert_allclose(
        w * np.sum((x0_hat - x0) ** 2, -1), np.sum((v_hat - v) ** 2, -1), rtol=1e-10
    )
    # denoiser <-> velocity wrappers are inverse to each other.
    vel = lambda z, t: np.sin(z) * t + 0.3  # noqa: E731 - any velocity field
    back = flow.velocity_from_denoiser(flow.denoiser_from_velocity(vel))
    np.testing.assert_allclose(back(z, t), vel(z, t), atol=1e-12)


def test_exact_velocity_reaches_the_exact_ode_endpoint():
    """The oracle's posterior mean gives the exact velocity v = (z - E[x0|z]) / t. Integrated by
    Euler at high NFE from t = 0.98 to 0.02 it lands on the closed-form PF-ODE map of a single
    Gaussian; Heun (second order) gets there with 20x fewer steps, onto t = 0 (sigma = 0, a last
    Euler step); on a two-mode mixture flow_euler is DDIM (eta = 0) step for step."""
    mean, std = np.array([[1.0, -0.5]]), np.array([[0.4, 0.7]])
    single = GaussianMixture(mean, std, np.array([1.0]))
    mix = GaussianMixture(
        np.array([[-1.0, 0.5], [1.0, 0.3]]), np.full((2, 2), 0.5), np.array([0.3, 0.7])
    )

    def grid(n, end):  # t = 0 is log-SNR +inf
        return jnp.asarray(flow.logsnr_from_t(np.linspace(0.98, end, n + 1)))

    with jax.enable_x64(True):
        x = np.random.default_rng(0).standard_normal((64, 2))

        @jax.jit
        def run(x):
            def go(oracle, method, n, end=0.02):
                return samplers.sample(oracle.denoise, x, grid(n, end), method, finish=False)

            return dict(
                euler=go(single, "flow_euler", 2000),
                heun_zero=go(single, "flow_heun", 100, end=0.0),
                mix_euler=go(mix, "flow_euler", 20, end=0.0),
                mix_ddim=go(mix, "ddim", 20, end=0.0),
            )

        out = jax.device_get(run(x))
    l0, l1 = flow.logsnr_from_t(0.98), flow.logsnr_from_t(0.02)
    euler = np.abs(out["euler"] - gaussian_ode_solution(x, l0, l1, mean[0], std[0])).max()
    heun = np.abs(out["heun_zero"] - gaussian_ode_solution(x, l0, np.inf, mean[0], std[0])).max()
    # Measured: Euler (2000 steps) 1.1e-3; Heun (100 steps onto t = 0) 2.2e-4, 5.4e-5 with 200.
    assert euler < 2e-3
    assert heun < 5e-4
    np.testing.assert_allclose(out["mix_euler"], out["mix_ddim"], atol=1e-10)


def test_logit_normal_time_sampling_matches_its_cdf():
    """t = sigmoid(m + s n): P(t <= u) = Phi((logit u - m) / s). Through the rectified-flow
    schedule the sampled log-SNR maps back to t exactly (up to the +-15 clip, mass < 1e-12 here).
    Kolmogorov-Smirnov at n = 20000: the statistic must stay below the 0.1% critical value."""
    n, m, s = 20_000, 0.5, 0.8
    sched = schedules.Schedule("rectified_flow")
    with jax.enable_x64(True):
        draw = lambda k: losses.sample_logsnr(  # noqa: E731
            k, n, sched, "logit_normal", p_mean=m, p_std=s, dtype=jnp.float64
        )
        t = flow.t_from_logsnr(np.asarray(jax.jit(draw)(jax.random.key(3))))
    cdf = lambda u: stats.norm.cdf((special.logit(u) - m) / s)  # noqa: E731
    ks = stats.kstest(t, cdf).statistic
    assert ks < 1.95 / math.sqrt(n)  # Kolmogorov distribution: P(sqrt(n) D > 1.95) = 0.001
    np.testing.assert_allclose(np.mean(special.logit(t)), m, atol=6 * s / math.sqrt(n))

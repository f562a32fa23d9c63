"""Schedule identities, parameterisation round-trips, and the loss-weight identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import losses, registries, schedules
from netlab.diffusion import parameterization as P
from netlab.diffusion.oracle import GaussianMixture
from netlab.errors import UserError

T = np.linspace(0.0, 1.0, 101)


@pytest.mark.parametrize("name", registries.SCHEDULES.names())
def test_variance_preserving_and_monotone(name):
    sched = schedules.Schedule(name)
    logsnr = sched.logsnr(T)
    alpha, sigma = schedules.alpha_sigma(logsnr)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-12)
    assert np.all(np.diff(logsnr) <= 1e-12), "log-SNR must fall from data to noise"
    # numpy (host, float64) and jax (in jit, float32) agree
    np.testing.assert_allclose(
        np.asarray(jax.jit(sched.logsnr)(jnp.asarray(T[1:-1], jnp.float32))),
        logsnr[1:-1],
        rtol=2e-3,
        atol=2e-3,
    )


def test_linear_beta_matches_ddpm_alphabar():
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    sched = schedules.Schedule("linear")
    idx = np.array([0, 487, 999])
    np.testing.assert_allclose(
        schedules.alpha_sigma(sched.logsnr(idx / 999))[0] ** 2, abar[idx], rtol=1e-10
    )


def test_resolution_and_input_scale_are_constant_logsnr_shifts():
    base = schedules.Schedule("cosine_shifted", logsnr_min=-30, logsnr_max=30)
    shift = schedules.shift_for_resolution(256, 64)
    assert shift == pytest.approx(-2 * np.log(4))
    shifted = schedules.Schedule("cosine_shifted", shift=shift, logsnr_min=-30, logsnr_max=30)
    inner = T[5:-5]
    np.testing.assert_allclose(shifted.logsnr(inner) - base.logsnr(inner), shift, rtol=1e-12)
    # input scaling b: x_t = alpha (b x0) + sigma eps has SNR b^2 alpha^2/sigma^2
    b = 0.5
    sig = schedules.Schedule("sigmoid")
    alpha, sigma = schedules.alpha_sigma(sig.logsnr(inner))
    np.testing.assert_allclose(
        np.log((b * alpha) ** 2 / sigma**2),
        sig.logsnr(inner) + schedules.shift_for_input_scale(b),
        rtol=1e-9,
    )


def test_chen_sigmoid_endpoints_and_edm_sigmas():
    sig = schedules.Schedule("sigmoid", logsnr_min=-40, logsnr_max=40)
    gamma = lambda t: schedules.alpha_sigma(sig.logsnr(np.array([t])))[0] ** 2
    assert gamma(0.0)[0] == pytest.approx(1.0, abs=1e-8) and gamma(1.0)[0] < 1e-8
    edm = schedules.Schedule("edm", logsnr_min=-40, logsnr_max=40)
    np.testing.assert_allclose(
        schedules.edm_sigma(edm.logsnr(np.array([1.0, 0.0]))), [80.0, 0.002], rtol=1e-10
    )


@pytest.mark.parametrize("kind", registries.PARAMETERIZATIONS.names())
def test_parameterisation_round_trip(kind):
    """The target each parameterisation's network should output maps back to x0 exactly."""
    key = jax.random.key(0)
    x0, eps = jax.random.normal(key, (2, 4, 3))
    alpha, sigma = 0.6, 0.8
    x_t = alpha * x0 + sigma * eps
    if kind == "eps":
        target = eps
    elif kind == "x0":
        target = x0
    elif kind == "v":
        target = P.v_from_x0_eps(x0, eps, alpha, sigma)
    elif kind == "flow":  # rectified-flow velocity (netlab/diffusion/flow.py)
        target = eps - x0
    else:
        c_skip, c_out, _, _ = P.edm_scalings(sigma / alpha)
        target = (x0 - c_skip * x_t / alpha) / c_out
    np.testing.assert_allclose(
        P.denoised(x_t, target, alpha, sigma, kind), x0, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(P.eps_from_x0(x_t, x0, alpha, sigma), eps, rtol=1e-5, atol=1e-5)


def test_loss_weights_are_the_objectives_they_name():
    """eps-MSE = SNR * x0-MSE, v-MSE = (1 + SNR) * x0-MSE, EDM lambda * c_out^2 = 1."""
    key = jax.random.key(1)
    x0, eps, err = jax.random.normal(key, (3, 8, 5))
    logsnr = jnp.linspace(-4, 4, 8)
    alpha, sigma = schedules.alpha_sigma(logsnr)
    a, s = alpha[:, None], sigma[:, None]
    x_t = a * x0 + s * eps
    eps_hat = eps + 0.1 * err
    x0_hat = P.x0_from_eps(x_t, eps_hat, a, s)
    w = losses.weight(logsnr, "eps")
    np.testing.assert_allclose(
        w * jnp.mean((x0_hat - x0) ** 2, 1), jnp.mean((eps_hat - eps) ** 2, 1), rtol=1e-4
    )
    v_hat = P.v_from_x0_eps(x0_hat, P.eps_from_x0(x_t, x0_hat, a, s), a, s)
    v = P.v_from_x0_eps(x0, eps, a, s)
    np.testing.assert_allclose(
        losses.weight(logsnr, "v") * jnp.mean((x0_hat - x0) ** 2, 1),
        jnp.mean((v_hat - v) ** 2, 1),
        rtol=1e-4,
    )
    _, c_out, _, _ = P.edm_scalings(sigma / alpha)
    np.testing.assert_allclose(losses.weight(logsnr, "edm") * c_out**2, 1.0, rtol=1e-5)
    assert jnp.all(losses.weight(logsnr, "min_snr", gamma=5.0) <= 5.0)


def test_oracle_reaches_the_bayes_loss():
    """With the exact GMM denoiser the x0-MSE equals the Bayes error of a single Gaussian."""
    std = 0.7
    g = GaussianMixture(np.zeros((1, 2)), np.full((1, 2), std), np.ones(1))
    key = jax.random.key(2)
    x0 = g.sample(key, 20000)
    logsnr = jnp.float32(0.5)
    alpha, sigma = schedules.alpha_sigma(logsnr)
    x_t = alpha * x0 + sigma * jax.random.normal(jax.random.key(3), x0.shape)
    mse = float(jnp.mean((g.denoise(x_t, logsnr) - x0) ** 2))
    bayes = std**2 - alpha**2 * std**4 / (alpha**2 * std**2 + sigma**2)
    assert mse == pytest.approx(float(bayes), rel=0.03)


@pytest.mark.parametrize("kind", registries.TIME_SAMPLINGS.names())
def test_time_sampling_is_float32_and_in_range(kind):
    sched = schedules.Schedule("cosine")
    logsnr = losses.sample_logsnr(jax.random.key(0), 512, sched, kind)
    assert logsnr.dtype == jnp.float32 and logsnr.shape == (512,)
    assert bool(jnp.all(jnp.isfinite(logsnr)))
    if kind == "antithetic":  # stratified: exactly one sample per 1/n stratum of t
        t = np.sort(np.asarray(logsnr))
        assert len(np.unique(np.round(t, 5))) == 512


def test_bad_names():
    with pytest.raises(UserError, match="diffusion.schedule='cosin': unknown noise_schedule"):
        schedules.Schedule("cosin")
    with pytest.raises(UserError, match="diffusion.weighting='snr': unknown loss_weighting"):
        losses.weight(jnp.zeros(()), "snr")
    with pytest.raises(UserError, match="diffusion.parameterization='score': unknown"):
        P.denoised(0.0, 0.0, 1.0, 1.0, "score")
    with pytest.raises(UserError, match="diffusion.grid='log'"):
        schedules.sampling_grid(schedules.Schedule("cosine"), 4, "log")


WEIGHT_FORMULAS = {  # numpy transcriptions of Kingma & Gao 2023, Table 1 (x0-space weights)
    "x0": lambda l: np.ones_like(l),
    "eps": np.exp,
    "v": lambda l: 1 + np.exp(l),
    "min_snr": lambda l: np.minimum(np.exp(l), 5.0),
    "edm": lambda l: (np.exp(-l) + 0.25) / (np.exp(-l) * 0.25),
    "sigmoid": lambda l: np.exp(l) / (1 + np.exp(l + 1.0)),  # SNR sigmoid(-1 - logsnr)
    "flow": lambda l: (1 + np.exp(l / 2)) ** 2,  # velocity MSE: 1/t^2, t = sigmoid(-logsnr/2)
}


@pytest.mark.parametrize("kind", registries.WEIGHTINGS.names())
def test_every_weighting_matches_its_formula(kind):
    assert kind in WEIGHT_FORMULAS, f"weighting {kind!r} has no formula here"
    logsnr = np.linspace(-8.0, 8.0, 17)
    np.testing.assert_allclose(
        losses.weight(jnp.asarray(logsnr, jnp.float32), kind),
        WEIGHT_FORMULAS[kind](logsnr),
        rtol=2e-5,
    )


@pytest.mark.parametrize("kind", registries.GRIDS.names())
def test_every_grid_runs_from_the_noisy_end_to_the_clean_end(kind):
    sched = schedules.Schedule("cosine_shifted", logsnr_min=-10.0, logsnr_max=6.0)
    grid = schedules.sampling_grid(sched, 7, kind)
    assert grid.dtype == np.float64 and grid.shape == (8,)
    assert np.all(np.diff(grid) > 0)  # log-SNR rises towards the data
    fn = registries.GRIDS.get(kind)
    if getattr(fn, "final", "schedule") == "zero":  # diffusers' spacings: 7 timesteps, sigma 0
        t = fn.timesteps(sched.num_train_steps, 7, 0) / (sched.num_train_steps - 1)
        np.testing.assert_allclose(grid[:-1], sched.logsnr(t), rtol=1e-12)
        assert np.isposinf(grid[-1]) and t[0] <= 1.0
        return
    np.testing.assert_allclose(grid[[0, -1]], sched.logsnr(np.array([1.0, 0.0])), rtol=1e-12)
    zero = schedules.sampling_grid(sched, 7, kind, final="zero")
    assert zero.shape == (8,) and np.isposinf(zero[-1]) and np.all(np.diff(zero) > 0)
    assert zero[0] == grid[0]

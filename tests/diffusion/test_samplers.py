"""Samplers against the exact probability-flow ODE of Gaussian data, and identities between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import guidance, samplers, schedules
from netlab.diffusion.oracle import GaussianMixture, gaussian_ode_solution
from netlab.errors import UserError

MEAN = np.array([[0.5, -1.0, 0.0]])
STD = np.array([[0.5, 0.8, 1.2]])  # data std well above sigma at the last grid point
GAUSS = GaussianMixture(MEAN, STD, np.array([1.0]))
SCHED = schedules.Schedule("cosine_shifted", logsnr_min=-10.0, logsnr_max=4.0)


def _errors(method, steps_list):
    errs = []
    with jax.enable_x64(True):
        x_T = np.asarray(jax.random.normal(jax.random.key(1), (64, 3), jnp.float64))
        for n in steps_list:
            grid = schedules.sampling_grid(SCHED, n, "uniform_logsnr")
            out = samplers.sample(
                GAUSS.denoise, jnp.asarray(x_T), jnp.asarray(grid), method, finish=False
            )
            exact = gaussian_ode_solution(x_T, grid[0], grid[-1], MEAN[0], STD[0])
            errs.append(float(np.sqrt(np.mean((np.asarray(out) - exact) ** 2))))
    return np.array(errs)


@pytest.mark.parametrize("method,order", [("ddim", 1), ("heun", 2), ("dpmpp_2m", 2), ("unipc", 3)])
def test_error_falls_at_the_theoretical_order(method, order):
    steps = np.array([16, 32, 64])
    errs = _errors(method, steps)
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert errs[-1] < errs[0]
    assert order - 0.35 < slope < order + 0.6, (method, errs, slope)


def test_ddim_equals_dpmpp_order1():
    """DPM-Solver++ order 1 is DDIM(eta=0): the first 2M step is order 1, so a 1-step run matches,
    and DDIM's closed form x_s = (sigma_s/sigma_t) x - alpha_s expm1(-h) x0 holds step by step."""
    x = jax.random.normal(jax.random.key(2), (16, 3))
    grid = jnp.asarray(schedules.sampling_grid(SCHED, 1, "uniform_logsnr"), jnp.float32)
    a = samplers.sample(GAUSS.denoise, x, grid, "ddim", finish=False)
    b = samplers.sample(GAUSS.denoise, x, grid, "dpmpp_2m", finish=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    grid = jnp.asarray(schedules.sampling_grid(SCHED, 6, "uniform_logsnr"), jnp.float32)
    x_np = np.asarray(x, np.float64)
    for l_t, l_s in zip(np.asarray(grid[:-1], np.float64), np.asarray(grid[1:], np.float64)):
        a_s, s_s = np.sqrt(1 / (1 + np.exp(-l_s))), np.sqrt(1 / (1 + np.exp(l_s)))
        s_t = np.sqrt(1 / (1 + np.exp(l_t)))
        x0 = np.asarray(GAUSS.denoise(jnp.asarray(x_np, jnp.float32), jnp.float32(l_t)), np.float64)
        x_np = (s_s / s_t) * x_np - a_s * np.expm1(-(l_s - l_t) / 2) * x0
    np.testing.assert_allclose(
        samplers.sample(GAUSS.denoise, x, grid, "ddim", finish=False), x_np, rtol=1e-4, atol=1e-4
    )


def test_point_mass_is_exact_for_first_order_solvers():
    """All data at one point: x0_hat is constant, so DDIM is exact at any step count."""
    point = GaussianMixture(np.array([[0.3, -0.7]]), np.array([[1e-6, 1e-6]]), np.array([1.0]))
    x = jax.random.normal(jax.random.key(3), (8, 2))
    grid = jnp.asarray(schedules.sampling_grid(SCHED, 3), jnp.float32)
    out = samplers.sample(point.denoise, x, grid, "ddim", finish=True)
    np.testing.assert_allclose(out, np.broadcast_to([0.3, -0.7], (8, 2)), atol=1e-4)


def test_ddpm_samples_have_the_data_distribution():
    mix = GaussianMixture(
        np.array([[-2.0, 0.0], [2.0, 1.0]]), np.full((2, 2), 0.5), np.array([0.3, 0.7])
    )
    x = jax.random.normal(jax.random.key(4), (4000, 2))
    grid = jnp.asarray(schedules.sampling_grid(schedules.Schedule("cosine"), 100), jnp.float32)
    out = np.asarray(
        jax.jit(lambda x, g, k: samplers.sample(mix.denoise, x, g, "ddpm", key=k))(
            x, grid, jax.random.key(5)
        )
    )
    frac_right = np.mean(out[:, 0] > 0)
    assert abs(frac_right - 0.7) < 0.03
    np.testing.assert_allclose(out[out[:, 0] > 0].mean(0), [2.0, 1.0], atol=0.06)
    np.testing.assert_allclose(out[out[:, 0] > 0].std(0), [0.5, 0.5], atol=0.06)


def test_guidance_scale_one_and_zero():
    cond = GaussianMixture(np.array([[1.0, 1.0]]), np.array([[0.5, 0.5]]), np.array([1.0]))
    uncond = GaussianMixture(np.array([[-1.0, 0.0]]), np.array([[1.0, 1.0]]), np.array([1.0]))

    def model(x, logsnr, labels):  # label 0 = the class, 1 = null
        return jnp.where((labels == 0)[:, None], cond.denoise(x, logsnr), uncond.denoise(x, logsnr))

    x = jax.random.normal(jax.random.key(6), (5, 2))
    labels = jnp.zeros((5,), jnp.int32)
    for scale, ref in [(1.0, cond), (0.0, uncond)]:
        d = guidance.classifier_free(model, labels, null_label=1, scale=jnp.float32(scale))
        np.testing.assert_allclose(
            d(x, jnp.float32(0.5)), ref.denoise(x, jnp.float32(0.5)), rtol=1e-6, atol=1e-6
        )
    d = guidance.classifier_free(model, labels, null_label=1, scale=jnp.float32(3.0))
    expect = uncond.denoise(x, 0.5) + 3.0 * (cond.denoise(x, 0.5) - uncond.denoise(x, 0.5))
    np.testing.assert_allclose(d(x, jnp.float32(0.5)), expect, rtol=1e-5, atol=1e-5)


def test_new_grid_or_scale_does_not_recompile():
    traces = []

    def model(x, logsnr, labels):
        return GAUSS.denoise(x, logsnr) * (1.0 + 0.0 * labels[:, None])

    @jax.jit
    def run(x, grid, scale):
        traces.append(1)
        d = guidance.classifier_free(
            model, jnp.zeros((x.shape[0],), jnp.int32), null_label=1, scale=scale
        )
        return samplers.sample(d, x, grid, "unipc")

    x = jnp.zeros((4, 3))
    for n_kind, scale in [("uniform_t", 1.0), ("uniform_logsnr", 2.0), ("edm", 4.0)]:
        run(
            x,
            jnp.asarray(schedules.sampling_grid(SCHED, 5, n_kind), jnp.float32),
            jnp.float32(scale),
        )
    assert len(traces) == 1


def test_bad_sampler_inputs():
    with pytest.raises(UserError, match="diffusion.sampler='euler': unknown sampler; choose one"):
        samplers.check("euler")
    with pytest.raises(UserError, match="sampler_kwargs.churn: not an option of sampler 'unipc'"):
        samplers.check("unipc", {"churn": 1.0})
    with pytest.raises(UserError, match="diffusion.sampler_kwargs={'num_corrector': 'two'}"):
        samplers.check("cfg_pc", {"num_corrector": "two"}, data_shape=(2,))
    with pytest.raises(ValueError, match="must be >= 1"):
        schedules.sampling_grid(SCHED, 0)

"""Samplers against the exact probability-flow ODE of Gaussian data, and identities between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import cfg_pc, guidance, samplers, schedules
from netlab.diffusion.oracle import GaussianMixture, gaussian_ode_solution
from netlab.errors import UserError

MEAN = np.array([[0.5, -1.0, 0.0]])
STD = np.array([[0.5, 0.8, 1.2]])  # data std well above sigma at the last grid point
GAUSS = GaussianMixture(MEAN, STD, np.array([1.0]))
SCHED = schedules.Schedule("cosine_shifted", logsnr_min=-10.0, logsnr_max=4.0)
# Ends at sigma_ve = e^-8 and then at sigma = 0: the closed-form last step x0_hat costs an error of
# about sigma_last^2 / (2 std^2), far below the solvers' own errors (see the module docstring).
ZERO_END = schedules.Schedule("cosine_shifted", logsnr_min=-8.0, logsnr_max=16.0)


def _errors(method, steps_list):
    errs = []
    with jax.enable_x64(True):
        x_T = np.asarray(jax.random.normal(jax.random.key(1), (64, 3), jnp.float64))
        for n in steps_list:
            grid = schedules.sampling_grid(ZERO_END, n, "uniform_logsnr", final="zero")
            assert np.isposinf(grid[-1]) and len(grid) == n + 1
            out = samplers.sample(GAUSS.denoise, jnp.asarray(x_T), jnp.asarray(grid), method)
            exact = gaussian_ode_solution(x_T, grid[0], np.inf, MEAN[0], STD[0])
            errs.append(float(np.sqrt(np.mean((np.asarray(out) - exact) ** 2))))
    return np.array(errs)


@pytest.mark.parametrize("method,order", [("ddim", 1), ("heun", 2), ("dpmpp_2m", 2), ("unipc", 3)])
def test_error_falls_at_the_theoretical_order_to_sigma_zero(method, order):
    """On a grid that ends at sigma = 0 (log-SNR +inf: NaN in DPM-Solver++, UniPC and Heun
    before the closed-form last step) the error against the exact PF-ODE map to sigma = 0 falls
    at the solver's order; `finish` adds nothing there."""
    steps = np.array([16, 32, 64])
    errs = _errors(method, steps)
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert np.all(np.isfinite(errs)) and errs[-1] < errs[0]
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
    with pytest.raises(UserError, match="diffusion.grid_final='one'"):
        schedules.sampling_grid(SCHED, 3, final="one")
    with pytest.raises(UserError, match="sampler_kwargs.order"):
        samplers.check("unipc", {"order": 4}, data_shape=(2,))


def test_heun_nfe_and_finish_at_sigma_zero():
    """EDM's Euler step into sigma = 0: 2N - 1 model calls (counted at run time), and `finish`
    returns the sample without another call."""
    calls = []

    def denoise(x, logsnr):
        jax.debug.callback(lambda: calls.append(1))
        return GAUSS.denoise(x, logsnr)

    grid = jnp.asarray(schedules.sampling_grid(SCHED, 4, "edm", final="zero"), jnp.float32)
    x = jax.random.normal(jax.random.key(7), (4, 3))
    out = jax.jit(lambda x, g: samplers.sample(denoise, x, g, "heun", finish=True))(x, grid)
    jax.effects_barrier()
    assert len(calls) == 7 == samplers.nfe("heun", 4, finish=True, final_zero=True)
    assert np.all(np.isfinite(np.asarray(out)))


def test_cfg_pc_skips_the_unconditional_model_at_scale_one():
    """PCG at guidance 1 (gamma = 2w - 1 = 1, predictor_scale 1) never calls the unconditional
    model, also with a traced scale under jit; at scale 2 it does (counted at run time)."""
    calls = {"cond": 0, "uncond": 0}

    def counted(name, model):
        def fn(x, logsnr):
            jax.debug.callback(lambda: calls.__setitem__(name, calls[name] + 1))
            return model.denoise(x, logsnr)

        return fn

    class Guided:  # the two halves of guidance.ClassifierFree with a traced scale
        def __init__(self, scale):
            self.scale = scale
            self.cond = counted("cond", GAUSS)
            self.uncond = counted("uncond", GaussianMixture(-MEAN, STD, np.array([1.0])))

        def __call__(self, x, logsnr):
            raise AssertionError("cfg_pc uses the halves")

    grid = jnp.asarray(schedules.sampling_grid(SCHED, 3, "uniform_logsnr"), jnp.float32)
    run = jax.jit(
        lambda x, s: samplers.sample(Guided(s), x, grid, "cfg_pc", jax.random.key(0), finish=False)
    )
    x = jax.random.normal(jax.random.key(8), (4, 3))
    run(x, jnp.float32(1.0))
    jax.effects_barrier()
    assert calls == {"cond": 3 + 3, "uncond": 0}  # predictor and corrector on each interval
    run(x, jnp.float32(2.0))
    jax.effects_barrier()
    assert calls["uncond"] == 3  # the corrector's tilted score only (predictor_scale 1)
    assert cfg_pc.gamma_for_cfg_ddpm(1.0) == 1.0

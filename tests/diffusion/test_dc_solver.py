"""DC-Solver: identity with UniPC at rho = 1, exact Lagrange interpolation, fitted ratios beat
UniPC against a many-step reference, and the cascade polynomial regression recovers its coefficients."""  # noqa: E501

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import dc_solver, samplers, schedules
from netlab.diffusion.oracle import GaussianMixture

GMM = GaussianMixture(
    np.array([[-1.0, 0.5], [1.0, -0.5]]), np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0.4, 0.6])
)
SCHED = schedules.Schedule("cosine_shifted", logsnr_min=-10.0, logsnr_max=4.0)
run_dc = jax.jit(lambda x, grid, r: dc_solver.dc_unipc(GMM.denoise, x, grid, r))


def test_all_ratios_one_is_unipc():
    x = jax.random.normal(jax.random.key(0), (32, 2))
    grid = jnp.asarray(schedules.sampling_grid(SCHED, 8, "uniform_logsnr"), jnp.float32)
    base = samplers.sample(GMM.denoise, x, grid, "unipc", finish=False)
    np.testing.assert_allclose(run_dc(x, grid, jnp.ones(8)), base, rtol=1e-5, atol=1e-6)
    moved = run_dc(x, grid, jnp.full(8, 0.8))
    assert float(jnp.abs(moved - base).max()) > 1e-4  # the ratios do act


def test_lagrange3_is_exact_on_quadratics():
    nodes = (jnp.float32(-1.3), jnp.float32(0.2), jnp.float32(1.1))
    q = np.poly1d([0.7, -2.0, 0.5])
    vals = tuple(jnp.asarray(q(float(n)), jnp.float32) for n in nodes)
    for at in (-2.0, 0.2, 0.5, 3.0):
        np.testing.assert_allclose(
            float(dc_solver.lagrange3(nodes, vals, jnp.float32(at))), q(at), rtol=1e-5, atol=1e-5
        )


def test_fitted_ratios_reduce_error_on_held_out_points():
    grid = jnp.asarray(schedules.sampling_grid(SCHED, 8, "uniform_logsnr"), jnp.float32)
    fine = jnp.asarray(schedules.sampling_grid(SCHED, 400, "uniform_logsnr"), jnp.float32)
    reference = jax.jit(lambda x: samplers.sample(GMM.denoise, x, fine, "dpmpp_2m", finish=False))
    x_fit = jax.random.normal(jax.random.key(1), (10, 2))
    x_test = jax.random.normal(jax.random.key(2), (256, 2))
    ratios = dc_solver.fit_ratios(GMM.denoise, x_fit, grid, reference(x_fit), iters=60, lr=0.01)
    ref = reference(x_test)
    err_unipc = float(jnp.mean((run_dc(x_test, grid, jnp.ones(8)) - ref) ** 2))
    err_dc = float(jnp.mean((run_dc(x_test, grid, ratios) - ref) ** 2))
    assert err_dc < 0.5 * err_unipc, (err_dc, err_unipc, ratios)


def test_cascade_polynomial_regression_recovers_coefficients():
    rng = np.random.default_rng(0)
    coef = rng.normal(0, 0.3, (3, 3, 3))
    settings = [(g, n) for g in (1.0, 4.0, 7.5, 12.0) for n in (5, 10, 20)]
    ratios = [dc_solver.cpr_predict(coef, g, n, n) for g, n in settings]
    fitted = dc_solver.cpr_fit(settings, ratios, degree=3)
    np.testing.assert_allclose(fitted, coef, rtol=1e-6, atol=1e-8)
    # Independent evaluation of the model at an unseen setting: sum_k c_k(g, n) (i/N)^k.
    g, n = 6.0, 8
    ck = np.einsum("kab,a,b->k", coef, (g / 12) ** np.arange(3), (n / 50) ** np.arange(3))
    expect = np.polynomial.polynomial.polyval(np.arange(n) / n, ck)
    np.testing.assert_allclose(dc_solver.cpr_predict(fitted, g, n, n), expect, rtol=1e-6, atol=1e-8)

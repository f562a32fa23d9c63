"""DDIB with exact Gaussian-mixture denoisers: the source -> latent -> source cycle error falls
with the step count at the solver's order, and translating between two Gaussians gives the exact
composition of their probability-flow maps, which tends to the affine map m2 + (s2/s1)(x - m1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import ddib
from netlab.diffusion.oracle import GaussianMixture, gaussian_ode_solution
from netlab.errors import UserError


def test_cycle_error_falls_at_the_solvers_order():
    """Cycle orders: DDIM (exponential Euler) 1; an explicit Runge-Kutta method of even order p
    run forwards then backwards with the same steps cancels its leading local error, so RK4's
    cycle is fifth order (Heun's third)."""
    gm = GaussianMixture(
        np.array([[-1.0, 0.5], [1.0, -0.5]]),
        np.array([[0.6, 0.7], [0.8, 0.6]]),
        np.array([0.4, 0.6]),
    )
    x = np.random.default_rng(0).standard_normal((64, 2))
    expected = {"ddim": 1.0, "rk4": 5.0}
    with jax.enable_x64(True):

        @jax.jit
        def cycle_errors(x):
            out = {}
            for method in expected:
                for n in (16, 32):
                    grid = jnp.linspace(-6.0, 6.0, n + 1)  # log-SNR, noise to data
                    z = ddib.encode(gm.denoise, x, grid, method)
                    out[method, n] = jnp.abs(ddib.decode(gm.denoise, z, grid, method) - x).mean()
            return out

        errs = {k: float(v) for k, v in cycle_errors(jnp.asarray(x)).items()}
    for method, order in expected.items():
        observed = np.log2(errs[method, 16] / errs[method, 32])
        assert abs(observed - order) < 0.2, (method, errs)
    assert errs["rk4", 32] < 1e-5
    with pytest.raises(UserError, match="method"):
        ddib.encode(gm.denoise, x, np.linspace(-6.0, 6.0, 5), "dopri")


def test_translation_between_gaussians_is_the_composed_flow_map():
    m1, s1 = np.array([-1.0, 2.0]), np.array([0.5, 1.5])
    m2, s2 = np.array([1.5, -0.5]), np.array([2.0, 0.3])
    src = GaussianMixture(m1[None], s1[None], np.ones(1))
    tgt = GaussianMixture(m2[None], s2[None], np.ones(1))
    x = m1 + s1 * np.random.default_rng(1).standard_normal((32, 2))
    l_max, l_min = 12.0, -16.0
    with jax.enable_x64(True):
        grid = jnp.linspace(l_min, l_max, 161)
        out = jax.jit(lambda x: ddib.translate(src.denoise, tgt.denoise, x, grid, "rk4"))(
            jnp.asarray(x)
        )
    latent = gaussian_ode_solution(x, l_max, l_min, m1, s1)
    exact = gaussian_ode_solution(latent, l_min, l_max, m2, s2)
    np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-5)
    # sigma_T = e^8: within |m1 - m2| s2 / sigma_T of the affine map
    np.testing.assert_allclose(out, m2 + (s2 / s1) * (x - m1), atol=2e-3)

"""DBIM against exact answers: eta = 1 is the Markovian bridge posterior (brute-force Gaussian
conditioning of the forward process on x0 and x_T), and with the exact denoiser of a point-mass
pair every eta keeps the bridge marginal, so the sample at the grid's end has the law
N(a x_T + b x0, c^2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import dbim, ddbm
from netlab.errors import UserError


def _ab(logsnr):
    return np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))


def test_eta_one_is_the_bridge_posterior_and_every_eta_keeps_the_marginal():
    l_T, l_s, l_t = -3.0, np.array([-2.5, -1.0, 0.5]), np.array([-1.0, 1.5, 4.0])
    (a_t, s_t), (a_s, s_s), (a_T, s_T) = _ab(l_t), _ab(l_s), _ab(l_T)

    def cov(au, su, av):  # Cov(x_u, x_v | x0) = sigma_u^2 alpha_v / alpha_u for u cleaner than v
        return su**2 * av / au

    var_t = s_t**2 - cov(a_t, s_t, a_T) ** 2 / s_T**2
    var_s = s_s**2 - cov(a_s, s_s, a_T) ** 2 / s_T**2
    c_ts = cov(a_t, s_t, a_s) - cov(a_t, s_t, a_T) * cov(a_s, s_s, a_T) / s_T**2
    out = {eta: dbim.coefficients(l_s, l_t, l_T, eta) for eta in (0.0, 0.5, 1.0)}  # numpy
    (a_s_, b_s, c_s), (a_t_, b_t, c_t) = (ddbm.bridge_abc(lv, l_T) for lv in (l_s, l_t))
    _, _, k, omega = out[1.0]
    np.testing.assert_allclose(k, c_ts / var_s, rtol=1e-10)
    np.testing.assert_allclose(omega**2, var_t - c_ts**2 / var_s, rtol=1e-10)
    for c_x0, c_xT, k, omega in out.values():
        np.testing.assert_allclose(c_x0 + k * b_s, b_t, rtol=1e-12)
        np.testing.assert_allclose(c_xT + k * a_s_, a_t_, rtol=1e-12)
        np.testing.assert_allclose(k**2 * c_s**2 + omega**2, c_t**2, rtol=1e-10)


def test_exact_denoiser_of_a_point_mass_keeps_the_bridge_law():
    """x0 = m + beta x_T exactly, so D = x0 whatever x_t: from the booting noise on, the sample
    at every grid point has law q(x_t | x0, x_T); at the end, residuals (x - a x_T - b x0) / c
    have mean 0 and variance 1 (5 standard errors)."""
    m, beta, n, l_T = np.array([0.5, -1.0]), np.array([0.7, 0.2]), 4096, -3.0
    x_T = np.random.default_rng(0).standard_normal((n, 2))
    x0 = m + beta * x_T
    grid = np.array([-2.999, -1.0, 1.0, 2.5])

    def denoise(x, logsnr, x_T):
        return jnp.broadcast_to(m + beta * x_T, x.shape)

    @jax.jit
    def run(x_T, etas):
        one = jax.vmap(lambda e: dbim.sample(denoise, x_T, grid, l_T, jax.random.key(1), eta=e))
        return one(etas), ddbm.bridge_abc(grid[-1], l_T)

    with jax.enable_x64(True):
        outs, abc = run(jnp.asarray(x_T), jnp.array([0.0, 0.5, 1.0]))
    a, b, c = (float(v) for v in abc)
    for out in np.asarray(outs):
        res = (out - a * x_T - b * x0) / c
        assert np.all(np.abs(res.mean(0)) < 5 / np.sqrt(n)), res.mean(0)
        assert np.all(np.abs(res.var(0) - 1) < 5 * np.sqrt(2 / n)), res.var(0)
    with pytest.raises(UserError, match="eta"):
        dbim.sample(denoise, x_T, grid, l_T, jax.random.key(0), eta=2.0)

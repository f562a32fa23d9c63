"""DBIM against exact answers: eta = 1 is the Markovian bridge posterior (brute-force Gaussian
conditioning of the forward process on x0 and x_T), and with the exact denoiser of a point-mass
pair every eta keeps the bridge marginal, so the sample at the grid's end has the law
N(a x_T + b x0, c^2). The high-order solvers converge at their order on a Gaussian bridge."""

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
        high = dbim.sample_high_order(denoise, x_T, grid, l_T, jax.random.key(1), order=3)
        return one(etas), ddbm.bridge_abc(grid[-1], l_T), high

    with jax.enable_x64(True):
        outs, abc, high = run(jnp.asarray(x_T), jnp.array([0.0, 0.5, 1.0]))
    # a constant x0_hat has no derivatives: order 3 is DBIM(eta = 0), same booting noise
    np.testing.assert_allclose(np.asarray(high), outs[0], rtol=1e-10, atol=1e-12)
    a, b, c = (float(v) for v in abc)
    for out in np.asarray(outs):
        res = (out - a * x_T - b * x0) / c
        assert np.all(np.abs(res.mean(0)) < 5 / np.sqrt(n)), res.mean(0)
        assert np.all(np.abs(res.var(0) - 1) < 5 * np.sqrt(2 / n)), res.var(0)
    with pytest.raises(UserError, match="eta"):
        dbim.sample(denoise, x_T, grid, l_T, jax.random.key(0), eta=2.0)


def test_high_order_solvers_converge_at_their_order_on_a_gaussian_bridge():
    """Pairs with x0 | x_T ~ N(m + beta x_T, v): the bridge ODE (eta = 0) keeps the z-score
    (x - a x_T - b mu) / sqrt(b^2 v + c^2) of the Gaussian marginal, so its exact endpoint from
    the booted point is affine. On grids uniform in lambda = log(b / c), the log-log slope of
    the mean error against NFE is the solver's order (3rd: ~3.4 here, the warm-up steps'
    constants still shrinking), and orders 2 and 3 beat order 1 (DBIM(eta = 0)'s update) at
    every NFE, also with the default order-1 last step."""
    m, beta, v = np.array([1.0, -0.5]), np.array([0.8, -0.3]), np.array([0.09, 0.25])
    l_T, l_end = -3.0, 5.0
    x_T = np.random.default_rng(1).standard_normal((256, 2))

    def denoise(x, logsnr, x_T):
        a, b, c = ddbm.bridge_abc(logsnr, l_T)
        mu = m + beta * x_T
        return mu + b * v / (b**2 * v + c**2) * (x - a * x_T - b * mu)

    steps = np.array([32, 64, 128])  # one compile: the shorter grids padded, num_steps traced
    grids = np.stack(
        [
            np.pad(dbim.lambda_grid(n, l_T + 1e-3, l_end, l_T), (0, 128 - n), mode="edge")
            for n in steps
        ]
    )

    @jax.jit
    def run(x_T, grids, steps):
        key = jax.random.key(0)
        orders, finals = jnp.array([1, 2, 3, 1, 2, 3]), jnp.array([False] * 3 + [True] * 3)

        def one(grid, n):
            out = jax.vmap(
                lambda o, f: dbim.sample_high_order(
                    denoise, x_T, grid, l_T, key, order=o, lower_order_final=f, num_steps=n
                )
            )(orders, finals)
            a0, b0, c0 = ddbm.bridge_abc(grid[0], l_T)
            a1, b1, c1 = ddbm.bridge_abc(grid[n], l_T)
            mu = m + beta * x_T
            z = jax.random.normal(jax.random.split(key, grid.shape[0])[0], x_T.shape, x_T.dtype)
            scale = jnp.sqrt((b1**2 * v + c1**2) / (b0**2 * v + c0**2))
            exact = a1 * x_T + b1 * mu + scale * c0 * z  # boot - a0 x_T - b0 mu = c0 z
            return jnp.abs(out - exact).mean((1, 2))

        return jax.vmap(one)(grids, steps)

    with jax.enable_x64(True):
        errs = np.asarray(run(jnp.asarray(x_T), grids, steps))
    for err in errs:
        assert err[1] < 0.2 * err[0] and err[2] < err[1], err
        assert err[4] < 0.5 * err[3] and err[5] < 0.5 * err[3], err  # order-1 last step
    slopes = -np.polyfit(np.log(steps + 1), np.log(errs[:, :3]), 1)[0]
    print("DBIM error slopes against NFE (orders 1, 2, 3):", slopes)
    assert 0.9 < slopes[0] < 1.1 and 1.8 < slopes[1] < 2.2 and 2.8 < slopes[2] < 4.0, slopes
    with pytest.raises(UserError, match="order"):
        dbim.sample_high_order(denoise, x_T, np.zeros(3), l_T, jax.random.key(0), order=4)

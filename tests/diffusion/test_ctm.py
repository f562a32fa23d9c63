"""CTM with the exact Gaussian flow map: G(x, t, t) = x for any network, the exact g(x, t, s)
tends to the oracle denoiser as s -> t, jumps compose (t -> u -> s equals t -> s, so gamma = 0
sampling lands on the oracle's exact ODE endpoint at any step count), and the soft consistency
loss vanishes at the exact map up to the Heun teacher's error."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import ctm
from netlab.diffusion.oracle import GaussianMixture, gaussian_ode_solution

MU, STD, EPS = np.array([0.6, -0.4]), np.array([0.5, 1.2]), 0.002
GM = GaussianMixture(MU[None], STD[None], np.ones(1))


def g_exact(params, x, t, s):
    """(x_s - (s/t) x_t) / (1 - s/t) for the Gaussian's PF-ODE in VE coordinates."""
    x_s = MU + (x - MU) * jnp.sqrt((STD**2 + s**2) / (STD**2 + t**2))
    return (x_s - (s / t) * x) / (1 - s / t)


def g_identity(params, x, t, s):  # a wrong map: no denoising at all
    return x


def test_exact_jumps_compose_and_zero_the_soft_consistency_loss():
    x = 80.0 * np.random.default_rng(0).standard_normal((64, 2))
    big_g = ctm.jump(g_exact)
    net_g = ctm.preconditioned(lambda p, x, ct, cs: jnp.sin(3 * x) + p + ct * cs)

    @jax.jit
    def run(x):
        out = {"boundary": ctm.jump(net_g)(1.0, x, 2.5, 2.5)}  # any network: G(x, t, t) = x
        # the exact g tends to the oracle denoiser as s -> t
        t = 1.7
        out["g_limit"] = g_exact(None, x / 40, t, t * (1 - 1e-7))
        out["denoise"] = GM.denoise(x / 40 / jnp.sqrt(1 + t**2), -2 * jnp.log(t))
        out["composed"] = big_g(None, big_g(None, x, 80.0, 3.0), 3.0, 0.4)
        out["direct"] = big_g(None, x, 80.0, 0.4)
        for n, sig in (("one", [80.0, EPS]), ("three", [80.0, 5.0, 0.5, EPS])):
            out[n] = ctm.sample(g_exact, None, x / 80.0, np.array(sig), gamma=0.0)
        x_t, path, s = x[:32] / 8, list(np.geomspace(10.0, 2.0, 5)), 0.4  # t = 10 -> u = 2
        for n, g, p in (("no_step", g_exact, path[:1]), ("heun", g_exact, path)):
            out[n] = ctm.soft_consistency_loss(g, None, None, GM.denoise, x_t, p, s, EPS)
        out["wrong"] = ctm.soft_consistency_loss(
            g_identity, None, None, GM.denoise, x_t, path[:2], s
        )
        return out

    with jax.enable_x64(True):
        out = jax.tree.map(np.asarray, run(jnp.asarray(x)))
    np.testing.assert_array_equal(out["boundary"], x)
    np.testing.assert_allclose(out["g_limit"], out["denoise"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["composed"], out["direct"], rtol=1e-12)
    a_t, a_e = 1 / np.sqrt(1 + 80.0**2), 1 / np.sqrt(1 + EPS**2)  # the oracle works in VP
    exact = gaussian_ode_solution(a_t * x, -2 * np.log(80.0), -2 * np.log(EPS), MU, STD) / a_e
    np.testing.assert_allclose(out["one"], exact, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["three"], exact, rtol=1e-9, atol=1e-9)
    heun, wrong = out["heun"].max(), out["wrong"].max()
    print(f"soft consistency loss: exact map {heun:.3g} (4 Heun steps), g = x {wrong:.3g}")
    assert out["no_step"].max() < 1e-20 and heun < 1e-4 * wrong, (out["no_step"], heun, wrong)


def test_balance_weight_is_the_gradient_norm_ratio_clipped_and_constant():
    """ctm.balance_weight against the closed-form gradients of two least-squares losses of one
    linear layer W: d/dW |W x - y|^2 = 2 (W x - y) x^T."""
    rng = np.random.default_rng(1)
    w0, x, y, x2, y2 = (rng.standard_normal(s) for s in ((3, 4), 4, 3, 4, 3))

    def loss(x, y, c):
        return lambda w: c * jnp.sum((w @ x - y) ** 2)

    ga, gb = 2 * np.outer(w0 @ x - y, x), 7.0 * 2 * np.outer(w0 @ x2 - y2, x2)
    want = np.linalg.norm(ga) / (np.linalg.norm(gb) + 1e-4)
    got = ctm.balance_weight(loss(x, y, 1.0), loss(x2, y2, 7.0), jnp.asarray(w0))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert ctm.balance_weight(loss(x, y, 1.0), loss(x2, y2, 0.0), jnp.asarray(w0)) == 1e4
    # no gradient flows through the weight
    d = jax.grad(lambda w: ctm.balance_weight(loss(x, y, 1.0), loss(x2, y2, 7.0), w))(w0)
    assert np.all(np.asarray(d) == 0)

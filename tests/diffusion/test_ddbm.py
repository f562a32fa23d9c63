"""DDBM against exact answers: the bridge marginal is Gaussian conditioning of the forward
process, a pure-noise source turns the bridge into ordinary diffusion, and the exact bridge
denoiser of a Gaussian pair carries x_T to the exact conditional law of x0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import ddbm, parameterization
from netlab.diffusion.oracle import GaussianMixture
from netlab.errors import UserError


def _ab(logsnr):
    return np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))


def _denoise_ve(gm, y, sigma):
    """E[x0 | y = x0 + sigma n] of a diagonal Gaussian mixture, in numpy."""
    var = gm.stds[None] ** 2 + sigma**2
    diff = y[:, None] - gm.means[None]
    logp = -0.5 * np.sum(diff**2 / var + np.log(var), -1) + np.log(gm.weights)
    w = np.exp(logp - logp.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    cond = gm.means[None] + gm.stds[None] ** 2 / var * diff
    return np.sum(w[..., None] * cond, 1)


def test_bridge_marginal_is_gaussian_conditioning_of_the_forward_process():
    """Given x0, (x_t, x_T) is jointly Gaussian under the Markov forward process:
    Var x_t = s_t^2, Var x_T = s_T^2, Cov = s_t^2 alpha_T / alpha_t; condition on x_T by hand."""
    x0, x_T = 0.7, -1.3
    lt = np.array([-3.0, -1.0, 0.5, 2.0, 5.0])
    l_T = -4.0
    (a_t, s_t), (a_T, s_T) = _ab(lt), _ab(l_T)
    cov = s_t**2 * a_T / a_t
    mean = a_t * x0 + cov / s_T**2 * (x_T - a_T * x0)
    var = s_t**2 - cov**2 / s_T**2
    a, b, c = ddbm.bridge_abc(lt, l_T)  # numpy in, numpy out
    np.testing.assert_allclose(a * x_T + b * x0, mean, rtol=1e-12)
    np.testing.assert_allclose(c**2, var, rtol=1e-12)
    # the VE bridge of the paper: alpha = 1, sigma = t; in VE coordinates y = x / alpha
    t, big_t = s_t / a_t, s_T / a_T
    np.testing.assert_allclose(a * a_T / a_t, t**2 / big_t**2, rtol=1e-12)
    np.testing.assert_allclose(b / a_t, 1 - t**2 / big_t**2, rtol=1e-12)
    np.testing.assert_allclose((c / a_t) ** 2, t**2 * (1 - t**2 / big_t**2), rtol=1e-12)


def test_pure_noise_source_is_ordinary_diffusion():
    """With x_T ~ N(alpha_T x0, sigma_T^2) (the forward kernel), averaging the bridge marginal
    over x_T gives the forward marginal N(alpha_t x0, sigma_t^2) exactly; at alpha_T = 0 (x_T
    pure noise, independent of x0) the bridge marginal, preconditioning and loss are EDM's, and
    the PF-ODE sampler (ratio 0) is EDM's Heun sampler step for step."""
    gm = GaussianMixture(
        np.array([[-1.0, 0.5], [1.0, -0.5]]), np.array([[0.4, 0.7], [0.5, 0.3]]), np.ones(2) / 2
    )
    rng = np.random.default_rng(0)
    x0, x_T, eps, x = (rng.standard_normal((16, 2)) for _ in range(4))
    grid = np.linspace(-5.0, 6.0, 9)
    lt = np.linspace(-3.0, 4.0, 6)
    a_t, s_t = _ab(lt)

    def net(xin, logsnr, x_T):  # any network: a fixed nonlinear map
        return jnp.tanh(xin + 0.1 * logsnr)

    @jax.jit
    def run(lt, x0, x_T, eps, x):  # everything jax in one compile
        out = {str(l_T): ddbm.bridge_abc(lt, l_T) for l_T in (-4.0, -3.5, -np.inf)}
        out["pre"] = ddbm.preconditioning(lt, -jnp.inf, sigma_0=0.5)
        out["edm"] = parameterization.edm_scalings(jnp.exp(-lt / 2), 0.5)
        l_t = lt[3]  # one training example per row at this log-SNR
        out["bridge"] = ddbm.loss(ddbm.denoiser(net, -jnp.inf), x0, x_T, eps, l_t, -jnp.inf)
        e_skip, e_out, e_in, _ = parameterization.edm_scalings(jnp.exp(-l_t / 2), 0.5)
        x_ve = x0 + jnp.exp(-l_t / 2) * eps
        d = e_skip * x_ve + e_out * net(e_in * x_ve, l_t, x_T)
        out["edm_loss"] = jnp.sum((d - x0) ** 2, -1) / e_out**2
        denoise = lambda x, l, _: gm.denoise(x, l)  # noqa: E731
        out["ode"] = ddbm.sample(denoise, x, x, grid, -jnp.inf, churn_step_ratio=0.0)
        return out

    with jax.enable_x64(True):
        out = jax.tree.map(np.asarray, run(lt, x0, x_T, eps, x))
    for l_T in (-4.0, -3.5):
        a, b, c = out[str(l_T)]
        a_T, s_T = _ab(l_T)
        np.testing.assert_allclose(a * a_T + b, a_t, rtol=1e-12)  # mean over x_T
        np.testing.assert_allclose(a**2 * s_T**2 + c**2, s_t**2, rtol=1e-12)  # variance
    np.testing.assert_allclose(np.stack(out["-inf"]), [0 * a_t, a_t, s_t], atol=1e-15)
    (skip, c_out, c_in, w), (e_skip, e_out, e_in, _) = out["pre"], out["edm"]
    # EDM acts on x_ve = x / alpha: c_skip x_ve = (c_skip / alpha) x, likewise c_in
    np.testing.assert_allclose([skip, c_out, c_in], [e_skip / a_t, e_out, e_in / a_t])
    np.testing.assert_allclose(w, 1 / e_out**2)
    np.testing.assert_allclose(out["bridge"], out["edm_loss"], rtol=1e-12)
    # EDM Heun (Karras et al. 2022, Alg. 2, no churn) on y = x / alpha, sigma = exp(-logsnr/2)
    sig, y = np.exp(-grid / 2), x / _ab(grid[0])[0]
    for s_cur, s_next in zip(sig[:-1], sig[1:]):
        d = (y - _denoise_ve(gm, y, s_cur)) / s_cur
        y_e = y + (s_next - s_cur) * d
        y = y + (s_next - s_cur) * 0.5 * (d + (y_e - _denoise_ve(gm, y_e, s_next)) / s_next)
    np.testing.assert_allclose(out["ode"], _ab(grid[-1])[0] * y, rtol=1e-10, atol=1e-10)
    with pytest.raises(UserError, match="churn_step_ratio"):
        ddbm.sample(gm.denoise, x, x, grid, -jnp.inf, churn_step_ratio=1.5)


def test_exact_bridge_denoiser_gives_the_exact_endpoint_law():
    """Pairs with x0 | x_T ~ N(m + beta x_T, v) per dimension: the exact bridge denoiser is
    E[x0 | x_t, x_T] = mu + b v / (b^2 v + c^2) (x_t - a x_T - b mu), mu = m + beta x_T. The hybrid
    sampler from x_T must give residuals x0 - mu with mean 0 and variance v: checked at 5
    standard errors of the sample mean (sqrt(v/n)) and variance (v sqrt(2/n))."""
    m, beta, v = np.array([1.0, -0.5]), np.array([0.8, -0.3]), np.array([0.09, 0.25])
    n, l_T, steps = 4096, -3.0, 128
    x_T = np.random.default_rng(1).standard_normal((n, 2))

    def denoise(x, logsnr, x_T):
        a, b, c = ddbm.bridge_abc(logsnr, l_T)
        mu = m + beta * x_T
        return mu + b * v / (b**2 * v + c**2) * (x - a * x_T - b * mu)

    # uniform in rho = sigma / alpha from just below rho_T to rho = e^-7: Euler-Maruyama's weak
    # error is first order and largest near rho_T, where Karras grids are coarse (at 128 steps the
    # variance bias is ~1%, below the 11% tolerance; 24 Karras rho=7 steps give ~13%)
    rho = np.linspace(np.exp(-l_T / 2) * (1 - 1e-4), np.exp(-7.0), steps + 1)
    with jax.enable_x64(True):
        out = jax.jit(lambda x_T, key: ddbm.sample(denoise, x_T, x_T, -2 * np.log(rho), l_T, key))(
            jnp.asarray(x_T), jax.random.key(0)
        )
    res = np.asarray(out) - (m + beta * x_T)
    assert np.all(np.abs(res.mean(0)) < 5 * np.sqrt(v / n)), res.mean(0)
    assert np.all(np.abs(res.var(0) - v) < 5 * v * np.sqrt(2 / n)), (res.var(0), v)

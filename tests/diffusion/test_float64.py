"""Precision follows the input: every sampler run in float64 (64-bit JAX inside
`jax.enable_x64(True)`, as tests/graph/test_float64.py) equals an independent numpy float64
transcription of its update rule on the Gaussian-mixture oracle (numpy too) to 1e-12 relative,
and float32 inputs under 64-bit JAX stay float32 through every sampler."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import samplers, schedules
from netlab.diffusion.oracle import GaussianMixture
from tests.diffusion.test_dc_solver import authors_sample

MU = np.array([[-1.0, 0.5], [1.0, -0.5]])
STD = np.array([[0.5, 0.4], [0.3, 0.5]])
W = np.array([0.4, 0.6])
GMM = GaussianMixture(MU, STD, W)
UNCOND = GaussianMixture(-MU, STD, W)
SCHED = schedules.Schedule("cosine_shifted", logsnr_min=-6.0, logsnr_max=6.0)
N = 6


def sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def den(x, logsnr, mu=MU):
    """E[x0 | x_t] of the mixture, in numpy float64."""
    a, s2 = np.sqrt(sig(logsnr)), sig(-logsnr)
    var = a**2 * STD[None] ** 2 + s2
    diff = x[:, None] - a * mu[None]
    logp = -0.5 * np.sum(diff**2 / var + np.log(var), -1) + np.log(W)
    p = np.exp(logp - logp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return np.sum(p[..., None] * (mu[None] + a * STD[None] ** 2 / var * diff), 1)


def ddim_np(x, g, eta, noise):
    for j in range(len(g) - 1):
        a_t, s_t, a_s, s_s = np.sqrt(sig(g[j])), np.sqrt(sig(-g[j])), np.sqrt(sig(g[j + 1])), 0.0
        s_s = np.sqrt(sig(-g[j + 1]))
        x0 = den(x, g[j])
        eps = (x - a_t * x0) / s_t
        var = min(max(eta**2 * s_s**2 / s_t**2 * (1 - a_t**2 / a_s**2), 0.0), s_s**2)
        x = a_s * x0 + np.sqrt(s_s**2 - var) * eps + np.sqrt(var) * noise[j]
    return x


def heun_np(x, g, churn, noise):
    s = np.exp(-0.5 * g)
    n = len(g) - 1
    y = x / np.sqrt(sig(g[0]))

    def d_ve(y, sg):
        return den(np.sqrt(sig(-2 * np.log(sg))) * y, -2 * np.log(sg))

    for j in range(n):
        gamma = min(churn / n, np.sqrt(2) - 1)
        s_hat = s[j] * (1 + gamma)
        y_hat = y + np.sqrt(s_hat**2 - s[j] ** 2) * noise[j]
        d = (y_hat - d_ve(y_hat, s_hat)) / s_hat
        y_e = y_hat + (s[j + 1] - s_hat) * d
        d2 = (y_e - d_ve(y_e, s[j + 1])) / s[j + 1]
        y = y_hat + (s[j + 1] - s_hat) * 0.5 * (d + d2)
    return np.sqrt(sig(g[-1])) * y


def dpmpp_np(x, g):
    lam, n, prev = g / 2, len(g) - 1, None
    for j in range(n):
        h = lam[j + 1] - lam[j]
        x0 = den(x, g[j])
        d = x0
        if j > 0 and j < n - 1:  # lower_order_final below 15 steps
            d = x0 + (x0 - prev) / (2 * (lam[j] - lam[j - 1]) / h)
        x = (
            np.sqrt(sig(-g[j + 1])) / np.sqrt(sig(-g[j])) * x
            - np.sqrt(sig(g[j + 1])) * np.expm1(-h) * d
        )
        prev = x0
    return x


def pcg_np(x, g, gamma, delta, noise):
    """PCG: conditional DDIM predictor, one Langevin step on the gamma-tilted score."""
    for j in range(len(g) - 1):
        a_t, s_t = np.sqrt(sig(g[j])), np.sqrt(sig(-g[j]))
        a_s, s_s = np.sqrt(sig(g[j + 1])), np.sqrt(sig(-g[j + 1]))
        x0 = den(x, g[j])
        x = a_s * x0 + s_s * (x - a_t * x0) / s_t
        eps = delta * s_s**2
        score = (
            a_s * (gamma * den(x, g[j + 1]) + (1 - gamma) * den(x, g[j + 1], -MU)) - x
        ) / s_s**2
        x = x + eps * score + np.sqrt(2 * eps) * noise[j]
    return x


class Halves:
    """The cond / uncond halves cfg_pc reads from a guided denoiser."""

    cond, uncond, scale = GMM.denoise, UNCOND.denoise, 2.0

    def __call__(self, x, logsnr):
        raise AssertionError("cfg_pc calls the halves")


def _noise(key, n, shape, fold=False):
    keys = jax.random.split(key, n)
    if fold:  # cfg_pc's corrector draws with fold_in(k, j), j = 0
        keys = [jax.random.fold_in(k, 0) for k in keys]
    return [np.asarray(jax.random.normal(k, shape, jnp.float64)) for k in keys]


CASES = {
    "ddim": ("ddim", {"eta": 0.5}, lambda x, g, key: ddim_np(x, g, 0.5, _noise(key, N, x.shape))),
    "ddpm": ("ddpm", {}, lambda x, g, key: ddim_np(x, g, 1.0, _noise(key, N, x.shape))),
    "heun": ("heun", {"churn": 1.0}, lambda x, g, key: heun_np(x, g, 1.0, _noise(key, N, x.shape))),
    # churn 0: exactly no noise (s_hat^2 - s^2 as an FMA left ~1e-8 of it in float64)
    "heun_churn0": ("heun", {}, lambda x, g, key: heun_np(x, g, 0.0, _noise(key, N, x.shape))),
    "dpmpp_2m": ("dpmpp_2m", {}, lambda x, g, key: dpmpp_np(x, g)),
    "unipc": (
        "unipc",
        {},
        lambda x, g, key: authors_sample(x, g / 2, g / 2, np.ones(N), 2, "bh2", den),
    ),
    "dc_solver": (
        "dc_solver",
        {"ratios": np.array([1, 1, 0.9, 1.1, 0.8, 1.2]), "variable": "lambda"},
        lambda x, g, key: authors_sample(
            x, g / 2, g / 2, [1, 1, 0.9, 1.1, 0.8, 1.2], 3, "bh1", den
        ),
    ),
    "cfg_pc": (
        "cfg_pc",
        {"delta": 0.05},
        lambda x, g, key: pcg_np(x, g, 3.0, 0.05, _noise(key, N, x.shape, 1)),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_in_float64_equals_numpy(case):
    method, kwargs, reference = CASES[case]
    key = jax.random.key(5)
    with jax.enable_x64(True):
        x = np.asarray(jax.random.normal(jax.random.key(4), (8, 2), jnp.float64))
        grid = schedules.sampling_grid(SCHED, N, "uniform_logsnr")
        denoise = Halves() if method == "cfg_pc" else GMM.denoise
        out = samplers.sample(
            denoise, jnp.asarray(x), jnp.asarray(grid), method, key, False, **kwargs
        )
        assert out.dtype == jnp.float64
        want = reference(x, grid, key)
    err = np.abs(np.asarray(out) - want).max() / np.abs(want).max()
    assert err < 1e-12, (method, err)


def test_float32_inputs_stay_float32_under_x64():
    """Tracing every sampler (no compile) on float32 inputs: the result is float32, no float64
    array appears (Heun's noise, the grid, DC-Solver's times and fit, CFG-PC's scales, the
    schedules' constants), and nothing fails to trace."""
    with jax.enable_x64(True):
        grid = schedules.sampling_grid(SCHED, 4, "uniform_logsnr", final="zero")
        grid = jnp.asarray(grid, jnp.float32)  # as the task gives it: in the samples' dtype
        x = jax.ShapeDtypeStruct((4, 2), jnp.float32)
        for method in samplers.SAMPLERS.names():
            kw = {"churn": 1.0} if method == "heun" else {}
            if method == "dc_solver":
                kw = {"fit_iters": 2, "reference_steps": 8, "fit_points": 2}
            fn = lambda x: samplers.sample(  # noqa: E731
                GMM.denoise, x, grid, method, jax.random.key(0), schedule=SCHED, **kw
            )
            out = jax.eval_shape(fn, x)
            assert out.dtype == jnp.float32, method
            jaxpr = jax.make_jaxpr(fn)(x)
            # no float64 array anywhere (weakly typed Python scalars show as f64[] and adapt)
            assert not re.search(r"f64\[\d", str(jaxpr)), method

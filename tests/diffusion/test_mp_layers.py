"""EDM2's magnitude-preserving layers (Karras et al. 2024, Sec. 2, App. B): unit magnitude in ->
unit magnitude out at any stored-weight scale, forced weight normalisation, MP-SiLU/sum/concat,
pixel norm. The optimizer pieces (forced weight normalisation of the stored weights, the
learning-rate decay) are tested in tests/train/test_optim_edm2.py.

Statistical checks use N independent samples of y^2 with y ~ N(0, 1) exactly (a unit-norm weight
row applied to white input): mean(y^2) has standard deviation sqrt(2/N), and the tolerance is 6 of
those (false-alarm probability < 1e-8 per check)."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import mp_layers as mp

N = 4096
TOL = 6 * math.sqrt(2 / N)
# Stored-weight scales. EDM2's eps (1e-4 added to the RMS) breaks the invariance only for stored
# RMS below ~1e-2, which forced weight normalisation never lets the stored weights reach.
SCALES = (1.0, 0.5, 1e3)


def _scaled(params, s):
    return jax.tree.map(lambda w: w * s, params)


def test_mp_conv_unit_magnitude_and_scale_invariance():
    rng = np.random.default_rng(0)
    cases = {  # a 3x3 image: the centre pixel's output sees the whole 3x3 kernel
        "linear": (mp.MPConv(features=6), rng.standard_normal((N, 8), np.float32)),
        "conv3x3": (
            mp.MPConv(features=6, kernel_size=(3, 3)),
            rng.standard_normal((N, 3, 3, 4), np.float32),
        ),
    }

    @jax.jit
    def run(key):  # one compile: both layers, every scale and the half gain
        res = {}
        for name, (layer, x) in cases.items():
            params = layer.init(key, x)
            outs = [layer.apply(_scaled(params, s), x) for s in SCALES]
            res[name] = (outs, layer.apply(params, x, gain=0.5))
        return res

    for name, (outs, half) in jax.device_get(run(jax.random.key(1))).items():
        for y in outs:
            y = y if name == "linear" else y[:, 1, 1, :]
            ms = np.mean(np.square(y, dtype=np.float64), axis=0)  # per channel: y ~ N(0, 1)
            np.testing.assert_allclose(ms, 1.0, atol=TOL, err_msg=name)
        # Forced weight normalisation: the forward pass ignores the stored weights' scale.
        for y in outs[1:]:
            np.testing.assert_allclose(y, outs[0], rtol=3e-4, atol=1e-5)
        # `gain` scales the output linearly (the output layer's learned gain).
        np.testing.assert_allclose(half, 0.5 * outs[0], atol=1e-5)


def test_mp_silu_has_unit_rms_on_standard_normal():
    # E[silu(x)^2], x ~ N(0, 1), by Gauss-Hermite quadrature (exact to float64 for this smooth
    # integrand); EDM2's 0.596 is that RMS rounded to three digits.
    z, w = np.polynomial.hermite_e.hermegauss(200)
    silu = z / (1 + np.exp(-z))
    rms = math.sqrt(np.sum(w * silu**2) / math.sqrt(2 * math.pi))
    assert abs(rms - mp.SILU_RMS) < 5e-4
    x = jnp.asarray(z, jnp.float32)
    second = np.sum(w * np.asarray(mp.mp_silu(x), np.float64) ** 2) / math.sqrt(2 * math.pi)
    assert abs(second - 1.0) < 2e-3


def test_mp_sum_cat_and_pixel_norm_preserve_magnitude():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((N, 3)), rng.standard_normal((N, 13))
    ts = (0.0, 0.3, 0.5, 0.9)
    big = 7.0 * rng.standard_normal((2, 4, 4, 8))

    @jax.jit
    def run(a, b, big):
        ua, ub = mp.pixel_norm(a, eps=0.0), mp.pixel_norm(b, eps=0.0)
        out = [(mp.mp_sum(a, b[:, :3], t), mp.mp_cat(a, b, t), mp.mp_cat(ua, ub, t)) for t in ts]
        y = mp.pixel_norm(big)
        return out, y, mp.pixel_norm(y)

    out, y, yy = jax.device_get(run(a, b, big))
    for t, (s, c, cu) in zip(ts, out):
        np.testing.assert_allclose(np.mean(s**2, axis=0), 1.0, atol=TOL)
        assert c.shape == (N, 16)
        np.testing.assert_allclose(np.mean(c**2), 1.0, atol=TOL)
        # Exactly, for unit-RMS a and b: unit RMS out, and a : b contribute (1-t)^2 : t^2.
        np.testing.assert_allclose(np.mean(cu**2, axis=-1), 1.0, rtol=1e-5)
        total = (1 - t) ** 2 + t**2
        ea, eb = np.sum(cu[:, :3] ** 2, -1), np.sum(cu[:, 3:] ** 2, -1)
        np.testing.assert_allclose(ea, 16 * (1 - t) ** 2 / total, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(eb, 16 * t**2 / total, rtol=1e-5, atol=1e-5)
    # Pixel norm: unit RMS over the channels of every pixel, and idempotent.
    np.testing.assert_allclose(np.sqrt(np.mean(y**2, -1)), 1.0, atol=1e-3)
    np.testing.assert_allclose(yy, y, atol=1e-3)

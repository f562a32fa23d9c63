"""The deformable-convolution op (netlab/nn/deformable.py) against XLA's grouped convolution and a
dense transcription: bilinear interpolation with zero padding is the interpolation matrix
B[q, pixel] = max(0, 1 - |y_q - y_pixel|) max(0, 1 - |x_q - x_pixel|) (the tent kernel, no
floor), so y = (B x) m w. Values and gradients (in x, offsets, modulation, scale and kernel) of
the gather op must equal the dense ones. Everything is computed in one jitted call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.nn.deformable import deform_conv, kernel_grid, sample_positions

N, H, W, G, CG, OG = 2, 5, 4, 2, 3, 2
K = 3
rng = np.random.default_rng(0)
X = rng.normal(size=(N, H, W, G * CG)).astype(np.float32)
# fractional offsets (away from the tent's kinks), some pointing outside the image
OFF = (rng.uniform(-1.8, 1.8, (N, H, W, G, K * K, 2)) + 0.137).astype(np.float32)
MASK = rng.normal(size=(N, H, W, G, K * K)).astype(np.float32)
KERNEL = rng.normal(size=(K * K, G, CG, OG)).astype(np.float32)
SCALE = rng.uniform(0.6, 1.4, (N, H, W, G)).astype(np.float32)
PROBE = rng.normal(size=(N, H, W, G * OG)).astype(np.float32)


def dense(x, off, mask, kernel, scale):
    """The same op through the explicit (N, H, W, G, K, H*W) interpolation matrix."""
    pos = sample_positions(off, K, 1, scale)
    ys, xs = jnp.meshgrid(jnp.arange(H), jnp.arange(W), indexing="ij")
    tent = lambda a, b: jnp.maximum(0.0, 1.0 - jnp.abs(a[..., None] - b.reshape(-1)))  # noqa: E731
    mat = tent(pos[..., 0], ys) * tent(pos[..., 1], xs)
    vals = jnp.einsum("nhwgkp,npgc->nhwgkc", mat, x.reshape(N, H * W, G, CG))
    return jnp.einsum("nhwgkc,nhwgk,kgco->nhwgo", vals, mask, kernel).reshape(N, H, W, -1)


def conv(x, kernel_hwio, groups, dilation=1):
    pad = dilation * (K - 1) // 2
    return jax.lax.conv_general_dilated(
        x,
        kernel_hwio,
        (1, 1),
        [(pad, pad)] * 2,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


@jax.jit
def _run():
    out = {"pos": sample_positions(OFF, K, 1, SCALE)}
    args = (X, OFF, MASK, KERNEL, SCALE)
    for name, fn in (
        ("gather", lambda x, o, m, k, s: deform_conv(x, o, m, k, scale=s)),
        ("dense", dense),
    ):
        loss = lambda *a: jnp.sum(fn(*a) * PROBE)  # noqa: B023, E731
        out[name] = (fn(*args), jax.grad(loss, argnums=(0, 1, 2, 3, 4))(*args))
    # zero offsets, unit modulation: the grouped convolution (dilation 1 and, by s = 2, 2)
    zero, ones = jnp.zeros_like(OFF), jnp.ones_like(MASK)
    hwio = KERNEL.reshape(K, K, G, CG, OG).transpose(0, 1, 3, 2, 4).reshape(K, K, CG, G * OG)
    out["conv"] = (deform_conv(X, zero, ones, KERNEL), conv(X, hwio, G))
    out["conv_dil2"] = (deform_conv(X, zero, ones, KERNEL, scale=2.0), conv(X, hwio, G, 2))
    # the core (no kernel) with zero offsets: the depthwise convolution with taps m
    taps = MASK[0, 0, 0]  # (G, K), the same at every pixel
    dw = jnp.repeat(taps.T.reshape(K, K, 1, G), CG, axis=-1)  # channel g * CG + c gets tap[g]
    core = deform_conv(X, zero, jnp.broadcast_to(taps, MASK.shape))
    out["core"] = (core, conv(X, dw, G * CG))
    # an integer offset (+1, -1) on a 1x1 kernel is an exact shift with zero fill
    shift = deform_conv(
        X,
        jnp.tile(jnp.asarray([1.0, -1.0]), (N, H, W, G, 1, 1)),
        jnp.ones((N, H, W, G, 1)),
        kernel_size=1,
    )
    out["shift"] = (shift, jnp.pad(X[:, 1:, :-1], ((0, 0), (0, 1), (1, 0), (0, 0))))
    return out


@pytest.fixture(scope="module")
def res():
    return jax.device_get(_run())


def test_gather_op_equals_the_dense_interpolation_matrix_in_value_and_gradient(res):
    (y, grads), (y_ref, grads_ref) = res["gather"], res["dense"]
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for name, g, g_ref in zip(("x", "offsets", "mask", "kernel", "scale"), grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4, err_msg=name)
        assert np.abs(g).max() > 1e-2, name  # every input gets a gradient
    # some points do fall outside the image (the zero padding is exercised)
    pos = res["pos"]
    assert (pos[..., 0] < 0).any() and (pos[..., 1] > W - 1).any()


@pytest.mark.parametrize("case", ["conv", "conv_dil2", "core", "shift"])
def test_zero_and_integer_offsets_are_convolutions(res, case):
    got, want = res[case]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_kernel_grid_is_the_row_major_convolution_layout():
    np.testing.assert_array_equal(
        kernel_grid(3, 2)[[0, 1, 3, 4]], [[-2, -2], [-2, 0], [0, -2], [0, 0]]
    )
    with pytest.raises(ValueError, match="odd"):
        kernel_grid(2)
    with pytest.raises(ValueError, match="do not fit"):
        deform_conv(X, OFF[..., :4, :], MASK)

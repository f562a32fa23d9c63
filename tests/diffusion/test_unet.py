"""ADM U-Net: shapes, zero-initialised output, conditioning paths, a learning check, bad sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab.diffusion.unet import UNet

MODEL = UNet(
    image_size=8,
    channels=2,
    width=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    num_heads=2,
    num_classes=3,
)
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((4, 8, 8, 2)), jnp.float32)
T = jnp.asarray(RNG.uniform(-10, 10, 4), jnp.float32)
Y = jnp.asarray(np.arange(4) % 4, jnp.int32)
fwd = jax.jit(lambda p, x, t, y: MODEL.apply({"params": p}, x, t, y))


@pytest.fixture(scope="module")
def trained():
    params = jax.jit(MODEL.init)(jax.random.key(0), X, T, Y)["params"]
    target = jnp.tanh(X[..., ::-1])  # a fixed map to memorise
    opt = optax.adam(1e-2)

    @jax.jit
    def step(p, o):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((fwd(p, X, T, Y) - target) ** 2))(p)
        u, o = opt.update(g, o)
        return optax.apply_updates(p, u), o, loss

    o, losses, p = opt.init(params), [], params
    for _ in range(12):
        p, o, loss = step(p, o)
        losses.append(float(loss))
    return params, p, losses


@pytest.mark.slow
def test_unet_starts_at_zero_and_trains(trained):
    init, _, losses = trained
    out0 = fwd(init, X, T, Y)
    assert out0.shape == X.shape and out0.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out0), 0.0)  # zero-initialised conv_out
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_unet_uses_noise_label_and_pixels(trained):
    _, p, _ = trained
    base = fwd(p, X, T, Y)
    assert float(jnp.abs(fwd(p, X, T + 5.0, Y) - base).max()) > 1e-4
    assert float(jnp.abs(fwd(p, X, T, (Y + 1) % 4) - base).max()) > 1e-4
    assert float(jnp.abs(fwd(p, X.at[:, 0, 0].add(1.0), T, Y) - base).max()) > 1e-4


@pytest.mark.slow
def test_unet_examples_are_independent(trained):
    """GroupNorm normalises per example: changing rows 1..3 leaves row 0's output unchanged."""
    _, p, _ = trained
    full = fwd(p, X, T, Y)
    other = fwd(p, X.at[1:].multiply(-2.0), T.at[1:].add(3.0), Y.at[1:].set(0))
    np.testing.assert_allclose(np.asarray(other[0]), np.asarray(full[0]), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(other[1:] - full[1:]).max()) > 1e-4


def test_unet_rejects_bad_image_size():
    bad = UNet(image_size=6, channels=1, width=32, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="not divisible by 2\\^2") as err:
        bad.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jnp.zeros((1,)))
    assert "\n" not in str(err.value)

"""netlab.nn blocks against direct numpy computations; logical axis names; float32 time features."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.nn import layers
from netlab.sharding import axes


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_numpy(causal):
    mod = layers.Attention(num_heads=2, causal=causal)
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    variables = mod.init(jax.random.key(1), x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nn.unbox(variables)["params"])
    p["qkv_bias"] = p["qkv_bias"] + 0.1  # zero-initialised: exercise it anyway
    out = mod.apply({"params": jax.tree.map(jnp.asarray, p)}, x)
    xn = np.asarray(x, np.float64)
    ref = np.zeros_like(xn)
    for h in range(2):
        q, k, v = (xn @ p["qkv"][:, i, h] + p["qkv_bias"][i, h] for i in range(3))
        logits = q @ np.swapaxes(k, 1, 2) / np.sqrt(4)
        if causal:
            logits = np.where(np.tril(np.ones((5, 5), bool)), logits, -np.inf)
        ref += _softmax(logits) @ v @ p["out"][h]
    np.testing.assert_allclose(out, ref + p["out_bias"], rtol=1e-4, atol=1e-5)
    if causal:  # the first position sees only itself: changing later tokens leaves it unchanged
        out2 = mod.apply({"params": jax.tree.map(jnp.asarray, p)}, x.at[:, 1:].add(1.0))
        np.testing.assert_allclose(out2[:, 0], out[:, 0], rtol=1e-5, atol=1e-6)


def test_attention_rejects_bad_width():
    with pytest.raises(ValueError, match="not divisible by num_heads=3") as err:
        layers.Attention(num_heads=3).init(jax.random.key(0), jnp.zeros((1, 2, 8)))
    assert "\n" not in str(err.value)


def test_parameters_carry_logical_axis_names():
    x = jnp.zeros((1, 3, 8))
    specs = nn.get_partition_spec(layers.Attention(num_heads=2).init(jax.random.key(0), x))[
        "params"
    ]
    assert tuple(specs["qkv"]) == (axes.EMBED, None, axes.HEADS, axes.KV)
    assert tuple(specs["out"]) == (axes.HEADS, axes.KV, axes.EMBED)
    mlp = nn.get_partition_spec(layers.Mlp(16).init(jax.random.key(0), x))["params"]
    assert tuple(mlp["fc1"]["kernel"]) == (axes.EMBED, axes.MLP) and tuple(
        mlp["fc2"]["kernel"]
    ) == (axes.MLP, axes.EMBED)


def test_mlp_matches_numpy():
    x = jax.random.normal(jax.random.key(2), (2, 3, 4))
    mod = layers.Mlp(6)
    p = nn.unbox(mod.init(jax.random.key(3), x))["params"]
    h = np.asarray(x) @ np.asarray(p["fc1"]["kernel"]) + np.asarray(p["fc1"]["bias"])
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    ref = h @ np.asarray(p["fc2"]["kernel"]) + np.asarray(p["fc2"]["bias"])
    np.testing.assert_allclose(mod.apply({"params": p}, x), ref, rtol=1e-5, atol=1e-5)


def test_sinusoidal_and_sincos_2d():
    t = np.array([0.0, 1.5, 937.0])
    emb = np.asarray(layers.sinusoidal_embedding(jnp.asarray(t), 8))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    np.testing.assert_allclose(
        emb,
        np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], 1),
        rtol=1e-4,
        atol=1e-4,
    )
    pos = layers.sincos_2d(3, 8)
    assert pos.shape == (9, 8)
    # Row-major grid: token 4 is (y=1, x=1); the y half uses omega = 1/10000^(j/2).
    omega = 1 / 10000 ** (np.arange(2) / 2)
    np.testing.assert_allclose(
        pos[5, :4], np.concatenate([np.sin(1 * omega), np.cos(1 * omega)]), rtol=1e-6
    )
    np.testing.assert_allclose(
        pos[5, 4:], np.concatenate([np.sin(2 * omega), np.cos(2 * omega)]), rtol=1e-6
    )
    with pytest.raises(ValueError, match="divisible by 4"):
        layers.sincos_2d(2, 6)


def test_timestep_embedder_stays_float32_and_resolves_nearby_steps():
    """bf16 rounds 937 and 936.5 to the same value; the float32 embedding keeps them apart."""
    mod = layers.TimestepEmbedder(16)
    t = jnp.asarray([936.5, 937.0], jnp.float32)
    p = mod.init(jax.random.key(0), t)
    out = mod.apply(p, t)
    assert out.dtype == jnp.float32
    assert float(jnp.abs(out[0] - out[1]).max()) > 1e-6
    assert float(jnp.bfloat16(936.5)) == float(jnp.bfloat16(937.0))


def test_modulate_broadcasts_over_length():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    shift, scale = np.full((1, 4), 0.5, np.float32), np.full((1, 4), 1.0, np.float32)
    np.testing.assert_allclose(layers.modulate(x, shift, scale), x * 2 + 0.5)

"""Sparse upcycling: an MoE layer built from a dense MLP computes the dense function at init, and
a whole MoE LM upcycled from a dense LM of the same shape computes the dense LM's logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.moe.layer import MoEMLP
from netlab.moe.lm import MoELM
from netlab.moe.shared import DenseMLP
from netlab.moe.upcycle import upcycle


def test_upcycled_moe_equals_dense_then_diverges_with_noise():
    x = jax.random.normal(jax.random.key(0), (2, 12, 16))
    dense = DenseMLP(24)
    moe = MoEMLP(
        num_experts=4,
        hidden=24,
        k=2,
        renormalize=True,
        capacity_factor=None,
        eval_capacity_factor=None,
    )
    pd = {
        "block3": {"mlp": nn.unbox(jax.jit(dense.init)(jax.random.key(0), x))["params"]},
        "ln": {"scale": np.ones(16)},
    }
    pm = {
        "block3": {"mlp": nn.unbox(jax.jit(moe.init)(jax.random.key(1), x))["params"]},
        "ln": {"scale": np.zeros(16)},
    }
    up = upcycle(pd, pm)
    assert up["block3"]["mlp"]["wi"].shape == (4, 16, 24)
    np.testing.assert_array_equal(up["block3"]["mlp"]["wo"][3], pd["block3"]["mlp"]["wo"])
    np.testing.assert_array_equal(up["block3"]["mlp"]["router"], pm["block3"]["mlp"]["router"])
    np.testing.assert_array_equal(up["ln"]["scale"], 1.0)  # other leaves copied
    apply_m = jax.jit(lambda p, x: moe.apply({"params": p}, x))
    yd = jax.jit(dense.apply)({"params": pd["block3"]["mlp"]}, x)
    # identical experts whose weights sum to 1: the dense function
    np.testing.assert_allclose(apply_m(up["block3"]["mlp"], x), yd, atol=2e-5)
    noisy = upcycle(pd, pm, rng=jax.random.key(2), noise=0.1)
    assert float(jnp.abs(apply_m(noisy["block3"]["mlp"], x) - yd).max()) > 1e-3


@pytest.mark.slow
def test_upcycled_lm_computes_the_dense_lm():
    kw = dict(max_len=8, width=16, depth=2, num_heads=2, mlp_hidden=24)
    moe = dict(
        num_experts=4,
        hidden=24,
        k=2,
        renormalize=True,
        capacity_factor=None,
        eval_capacity_factor=None,
    )
    dense_lm, moe_lm = MoELM(moe_every=3, moe=moe, **kw), MoELM(moe_every=1, moe=moe, **kw)
    assert dense_lm.num_moe_layers() == 0 and moe_lm.num_moe_layers() == 2
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, 256)
    pd = nn.unbox(jax.jit(dense_lm.init)(jax.random.key(1), tokens))["params"]
    shapes = nn.unbox(jax.eval_shape(moe_lm.init, jax.random.key(2), tokens))["params"]
    pm = jax.tree.map(lambda a: np.random.default_rng(0).normal(size=a.shape), shapes)
    up = upcycle(pd, pm)
    np.testing.assert_array_equal(up["block1"]["attn"]["qkv"], pd["block1"]["attn"]["qkv"])
    np.testing.assert_allclose(
        jax.jit(moe_lm.apply)({"params": up}, tokens),
        jax.jit(dense_lm.apply)({"params": pd}, tokens),
        atol=1e-4,
    )


def test_upcycle_shape_mismatch_is_a_one_line_error():
    pd = {"block0": {"mlp": {"wi": np.zeros((16, 8)), "wo": np.zeros((8, 16))}}}
    pm = {
        "block0": {
            "mlp": {
                "wi": np.zeros((4, 16, 24)),
                "wo": np.zeros((4, 24, 16)),
                "router": np.zeros((16, 4)),
            }
        }
    }
    with pytest.raises(ValueError, match="set the MoE hidden size") as err:
        upcycle(pd, pm)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no dense MLP"):
        upcycle({"block0": {}}, pm)

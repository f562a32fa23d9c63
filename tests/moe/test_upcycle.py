"""Sparse upcycling: an MoE LM built from a dense LM computes the dense function at init."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.moe.lm import MoELM
from netlab.moe.upcycle import upcycle

KW = dict(max_len=12, width=16, depth=2, num_heads=2, mlp_hidden=24)
MOE = dict(num_experts=4, hidden=24, k=2, renormalize=True, capacity_factor=None, eval_capacity_factor=None)


@pytest.mark.slow
def test_upcycled_moe_equals_dense_then_diverges_with_noise():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 12)), jnp.int32)
    dense, moe = MoELM(moe_every=99, **KW), MoELM(moe_every=1, moe=MOE, **KW)
    pd = nn.unbox(jax.jit(dense.init)(jax.random.key(0), tokens))["params"]
    pm = nn.unbox(jax.jit(moe.init)(jax.random.key(1), tokens))["params"]
    up = upcycle(pd, pm)
    assert up["moe_0"]["wi"].shape == (4, 16, 24)
    np.testing.assert_array_equal(up["moe_1"]["wo"][3], pd["mlp_1"]["wo"])
    np.testing.assert_array_equal(up["moe_0"]["router"], pm["moe_0"]["router"])   # fresh router
    apply_d, apply_m = jax.jit(dense.apply), jax.jit(moe.apply)
    yd = apply_d({"params": pd}, tokens)[0]
    ym = apply_m({"params": up}, tokens)[0]
    np.testing.assert_allclose(ym, yd, atol=2e-5)      # identical experts, weights summing to 1
    noisy = upcycle(pd, pm, rng=jax.random.key(2), noise=0.1)
    assert float(jnp.abs(apply_m({"params": noisy}, tokens)[0] - yd).max()) > 1e-3


def test_upcycle_shape_mismatch_is_a_one_line_error():
    pd = {"mlp_0": {"wi": np.zeros((16, 8)), "wo": np.zeros((8, 16))}}
    pm = {"moe_0": {"wi": np.zeros((4, 16, 24)), "wo": np.zeros((4, 24, 16)), "router": np.zeros((16, 4))}}
    with pytest.raises(ValueError, match="set the MoE hidden size") as err:
        upcycle(pd, pm)
    assert "\n" not in str(err.value)

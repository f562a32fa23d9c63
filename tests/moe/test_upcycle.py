"""Sparse upcycling: an MoE layer built from a dense MLP computes the dense function at init."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.moe.layer import MoEMLP
from netlab.moe.lm import DenseMLP
from netlab.moe.upcycle import upcycle


def test_upcycled_moe_equals_dense_then_diverges_with_noise():
    x = jax.random.normal(jax.random.key(0), (2, 12, 16))
    dense = DenseMLP(24)
    moe = MoEMLP(num_experts=4, hidden=24, k=2, renormalize=True, capacity_factor=None, eval_capacity_factor=None)
    pd = {"mlp_3": nn.unbox(jax.jit(dense.init)(jax.random.key(0), x))["params"], "ln": {"scale": np.ones(16)}}
    pm = {"moe_3": nn.unbox(jax.jit(moe.init)(jax.random.key(1), x))["params"], "ln": {"scale": np.zeros(16)}}
    up = upcycle(pd, pm)
    assert up["moe_3"]["wi"].shape == (4, 16, 24)
    np.testing.assert_array_equal(up["moe_3"]["wo"][3], pd["mlp_3"]["wo"])
    np.testing.assert_array_equal(up["moe_3"]["router"], pm["moe_3"]["router"])    # fresh router
    np.testing.assert_array_equal(up["ln"]["scale"], 1.0)                            # other leaves copied
    apply_m = jax.jit(lambda p, x: moe.apply({"params": p}, x)[0])
    yd = jax.jit(dense.apply)({"params": pd["mlp_3"]}, x)
    np.testing.assert_allclose(apply_m(up["moe_3"], x), yd, atol=2e-5)   # identical experts, weights sum to 1
    noisy = upcycle(pd, pm, rng=jax.random.key(2), noise=0.1)
    assert float(jnp.abs(apply_m(noisy["moe_3"], x) - yd).max()) > 1e-3


def test_upcycle_shape_mismatch_is_a_one_line_error():
    pd = {"mlp_0": {"wi": np.zeros((16, 8)), "wo": np.zeros((8, 16))}}
    pm = {"moe_0": {"wi": np.zeros((4, 16, 24)), "wo": np.zeros((4, 24, 16)), "router": np.zeros((16, 4))}}
    with pytest.raises(ValueError, match="set the MoE hidden size") as err:
        upcycle(pd, pm)
    assert "\n" not in str(err.value)

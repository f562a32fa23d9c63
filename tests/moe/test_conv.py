"""CondConv equals the routing-weighted sum of per-expert convolutions; pMoE experts see exactly l
patches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.moe.condconv import CondConv
from netlab.moe.pmoe import PatchMoE
from netlab.nn import aux


def test_condconv_is_routing_weighted_sum_of_expert_convs():
    layer = CondConv(features=5, num_experts=3)
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    params = nn.unbox(jax.jit(layer.init)(jax.random.key(1), x))["params"]
    r = jnp.array([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3]])
    y = jax.jit(lambda p, x, r: layer.apply({"params": p}, x, r))(params, x, r)
    per_expert = [
        jax.lax.conv_general_dilated(
            x, params["kernels"][e], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        for e in range(3)
    ]
    expect = sum(r[:, e, None, None, None] * per_expert[e] for e in range(3)) + params["bias"]
    np.testing.assert_allclose(y, expect, atol=1e-4)
    y_routed = jax.jit(layer.apply)({"params": params}, x)  # learned sigmoid routing in (0, 1)
    assert y_routed.shape == (2, 6, 6, 5) and not np.allclose(y_routed, y)


def test_pmoe_each_expert_processes_exactly_l_patches_per_image():
    layer = PatchMoE(features=8, num_experts=4, patch=2, patches_per_expert=3, hidden=16)
    images = jax.random.normal(jax.random.key(2), (5, 8, 8, 1))
    params = nn.unbox(jax.jit(layer.init)(jax.random.key(3), images))["params"]
    y, cols = jax.jit(
        lambda p, im: layer.apply({"params": p}, im, mutable=["intermediates", *aux.COLLECTIONS])
    )(params, images)
    assert y.shape == (5, 16, 8)
    gates = np.asarray(cols["intermediates"]["moe"]["gates"][0])  # (B, N, E): routed patches
    np.testing.assert_array_equal((gates > 0).sum(1), 3)  # l patches per expert per image
    unrouted = float(aux.mean_metrics(cols)["unrouted_fraction"])
    assert unrouted >= 1.0 - 4 * 3 / 16 - 1e-6

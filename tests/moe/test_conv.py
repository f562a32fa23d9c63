"""CondConv equals the routing-weighted sum of per-expert convolutions; pMoE experts see exactly l
patches, chosen by the paper's patch-level router (numpy transcription, planted patches)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.moe.condconv import CondConv
from netlab.moe.expert_choice import expert_choice_routing
from netlab.moe.layer import MoEMLP
from netlab.moe.patch_router import PatchLevel, patch_level_routing
from netlab.moe.pmoe import PatchMoE
from netlab.moe.registries import ROUTERS
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


def numpy_patch_level_routing(scores, l):
    """Chowdhury et al. 2023, §2: J_s = top-l patches by w_s^T x^(j); G_{j,s} = softmax over J_s."""
    g, n, e = scores.shape
    dispatch = np.zeros((g, n, e, l))
    combine = np.zeros((g, n, e, l))
    for gi in range(g):
        for s in range(e):
            keep = np.argsort(-scores[gi, :, s], kind="stable")[:l]
            z = scores[gi, keep, s].astype(np.float64)
            gate = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            dispatch[gi, keep, s, np.arange(l)] = 1.0
            combine[gi, keep, s, np.arange(l)] = gate
    return dispatch, combine


def test_patch_level_router_matches_numpy():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 16, 4)).astype(np.float32)
    r = jax.jit(patch_level_routing, static_argnums=1)(scores, 5)
    dispatch, combine = numpy_patch_level_routing(scores, 5)
    np.testing.assert_array_equal(r.dispatch, dispatch)
    np.testing.assert_allclose(r.combine, combine, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(r.combine).sum((1, 3)), 1.0, rtol=1e-5)


def test_pmoe_router_keeps_the_planted_patches():
    """Images of 16 patches, 3 of which carry the label's pattern v (plus noise), the rest noise.
    Both experts' routing vectors align with v (expert 1 three times as strongly): each expert keeps
    exactly the 3 planted patches (the paper ranks by the expert's own score). Expert choice, which
    ranks by the softmax over experts, sends expert 0 to noise patches instead: expert 1 takes the
    probability mass of the planted patches."""
    rng = np.random.default_rng(1)
    b, n, d, l = 32, 16, 8, 3
    v = np.zeros(d, np.float32)
    v[0] = 1.0
    x = 0.3 * rng.standard_normal((b, n, d)).astype(np.float32)
    planted = np.stack([rng.choice(n, l, replace=False) for _ in range(b)])
    for i in range(b):
        x[i, planted[i]] += 3.0 * v
    w = np.stack([v, 3.0 * v, -v, np.roll(v, 1)], axis=1)  # (d, E): router vectors w_s
    layer = MoEMLP(num_experts=4, hidden=4, router="pmoe", expert_capacity=l, backend="capacity")
    params = nn.unbox(jax.jit(layer.init)(jax.random.key(0), jnp.asarray(x)))["params"]
    params = dict(params, router=jnp.asarray(w))
    _, cols = jax.jit(lambda p, x: layer.apply({"params": p}, x, mutable=["intermediates"]))(
        params, jnp.asarray(x)
    )
    kept = np.asarray(cols["intermediates"]["gates"][0]) > 0  # (B, N, E)
    truth = np.zeros((b, n), bool)
    np.put_along_axis(truth, planted, True, axis=1)
    for s in (0, 1):
        np.testing.assert_array_equal(kept[..., s], truth)
    ec = expert_choice_routing(jnp.einsum("bnd,de->bne", x, w), l)
    assert (np.asarray(ec.dispatch).sum(-1)[..., 0] > 0)[truth].mean() < 0.5


def test_pmoe_model_uses_the_paper_router():
    assert PatchMoE(features=4).layer_fields()["router"] == "pmoe"
    assert ROUTERS.get("pmoe") is PatchLevel

"""Layers against dense numpy oracles; permutation equivariance; padding never changes real
nodes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.graph import appnp, deepergcn, gat, gatv2, gcn, gin, padding, sgc
from netlab.graph import layers as L

N, E, F = 11, 36, 6


def make(seed=0, n=N, e=E, budget=None, perm=None, x=None):
    rng = np.random.default_rng(seed)
    s, r = rng.integers(0, n, e), rng.integers(0, n, e)
    if x is None:
        x = rng.normal(size=(n, F)).astype(np.float32)
    if perm is not None:  # node i of the original graph becomes node perm[i]
        s, r = perm[s], perm[r]
        x2 = np.empty_like(x)
        x2[perm] = x
        x = x2
    g = padding.from_edges(s, r, n, nodes=x, symmetrize=True, budget=budget)
    return g, x


def dense_adj(g):
    m = g.edge_mask
    a = np.zeros((g.num_nodes,) * 2)
    a[g.receivers[m], g.senders[m]] = g.edge_weight[m]
    return a[:N, :N]


def init_apply(layer, g, x, seed=0, **kw):
    gd = padding.to_device(g)
    params = nn.unbox(layer.init(jax.random.key(seed), gd, jnp.asarray(x), **kw))
    return params, lambda p, gg, xx: layer.apply(p, padding.to_device(gg), jnp.asarray(xx), **kw)


def test_gcn_equals_dense_formula():
    g, x = make()
    layer = gcn.GCNConv(4)
    params, f = init_apply(layer, g, g.nodes)
    params = jax.tree.map(lambda v: v + 0.3, params)  # non-zero bias
    out = np.asarray(f(params, g, g.nodes))[:N]
    a = dense_adj(g) + np.eye(N)
    d = a.sum(1) ** -0.5
    w, b = np.asarray(params["params"]["lin"]["kernel"]), np.asarray(params["params"]["bias"])
    expect = (d[:, None] * a * d[None]) @ x @ w + b
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)


def test_sgc_equals_k_dense_propagations_then_linear():
    g, x = make(1)
    params, f = init_apply(sgc.SGConv(3, k=3), g, g.nodes)
    params = jax.tree.map(lambda v: v + 0.1, params)
    a = dense_adj(g) + np.eye(N)
    d = a.sum(1) ** -0.5
    s = d[:, None] * a * d[None]
    p = params["params"]["lin"]
    expect = s @ s @ s @ x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    np.testing.assert_allclose(np.asarray(f(params, g, g.nodes))[:N], expect, rtol=1e-4, atol=1e-5)


def numpy_gat(
    x, adj, w, att_src, att_dst, bias, heads, ch, concat, v2=False, wr=None, br=None, bl=None
):
    h = (x @ w + (bl if bl is not None else 0)).reshape(len(x), heads, ch)
    ht = (x @ wr + br).reshape(len(x), heads, ch) if v2 else None
    a = adj + np.eye(len(x))
    out = np.zeros((len(x), heads, ch))
    for i in range(len(x)):
        nb = np.nonzero(a[i])[0]
        if v2:
            z = h[nb] + ht[i][None]
            e = (np.where(z > 0, z, 0.2 * z) * att_src[0][None]).sum(-1)
        else:
            e = (h[nb] * att_src[0]).sum(-1) + (h[i] * att_dst[0]).sum(-1)[None]
            e = np.where(e > 0, e, 0.2 * e)
        al = np.exp(e - e.max(0))
        al = al / al.sum(0)
        out[i] = (al[..., None] * h[nb]).sum(0)
    out = out.reshape(len(x), -1) if concat else out.mean(1)
    return out + bias


@pytest.mark.parametrize("concat", [True, False])
def test_gat_attention_matches_numpy(concat):
    g, x = make(2)
    params, f = init_apply(gat.GATConv(3, heads=2, concat=concat), g, g.nodes)
    params = jax.tree.map(lambda v: v + 0.05, params)
    p = {k: np.asarray(v) for k, v in params["params"].items() if k != "lin"}
    expect = numpy_gat(
        x,
        dense_adj(g),
        np.asarray(params["params"]["lin"]["kernel"]),
        p["att_src"],
        p["att_dst"],
        p["bias"],
        2,
        3,
        concat,
    )
    np.testing.assert_allclose(np.asarray(f(params, g, g.nodes))[:N], expect, rtol=1e-4, atol=1e-5)


def test_gatv2_attention_matches_numpy():
    g, x = make(3)
    params, f = init_apply(gatv2.GATv2Conv(3, heads=2), g, g.nodes)
    params = jax.tree.map(lambda v: v + 0.05, params)
    pp = params["params"]
    expect = numpy_gat(
        x,
        dense_adj(g),
        np.asarray(pp["lin_l"]["kernel"]),
        np.asarray(pp["att"]),
        None,
        np.asarray(pp["bias"]),
        2,
        3,
        True,
        v2=True,
        wr=np.asarray(pp["lin_r"]["kernel"]),
        br=np.asarray(pp["lin_r"]["bias"]),
        bl=np.asarray(pp["lin_l"]["bias"]),
    )
    np.testing.assert_allclose(np.asarray(f(params, g, g.nodes))[:N], expect, rtol=1e-4, atol=1e-5)


def test_gin_equals_mlp_of_self_plus_neighbour_sum():
    g, x = make(4)
    params, f = init_apply(gin.GINConv((5, 4), eps=0.25), g, g.nodes)
    mlp = L.MLP((5, 4))
    expect = mlp.apply(
        {"params": params["params"]["mlp"]}, jnp.asarray(1.25 * x + dense_adj(g) @ x, jnp.float32)
    )
    np.testing.assert_allclose(
        np.asarray(f(params, g, g.nodes))[:N], np.asarray(expect), rtol=1e-4, atol=1e-5
    )


def test_genconv_softmax_aggregation_interpolates_mean_and_max():
    """SoftMax_Agg_β: β → 0 gives the mean of messages, large β their max (DeeperGCN Prop. 4)."""
    g, x = make(5)
    adj = dense_adj(g)
    msg_of = lambda xx: np.maximum(xx, 0) + 1e-7
    outs = {}
    for t in (1e-6, 200.0):
        layer = deepergcn.GENConv(F, t=t, num_mlp_layers=1, bias=True)
        params = nn.unbox(layer.init(jax.random.key(0), padding.to_device(g), jnp.asarray(g.nodes)))
        # capture the aggregated message m_v via the MLP input: out = MLP(x + m)
        _, inter = layer.apply(
            params,
            padding.to_device(g),
            jnp.asarray(g.nodes),
            capture_intermediates=True,
            mutable=["intermediates"],
        )
        outs[t] = np.asarray(
            inter["intermediates"]["mlp"]["lin0"]["__call__"][0]
        )  # MLP(norm-free) output
        lin = params["params"]["mlp"]["lin0"]
        outs[t] = (outs[t] - np.asarray(lin["bias"])) @ np.linalg.pinv(np.asarray(lin["kernel"]))
    has_nb = adj[:N].sum(1) > 0
    mean = np.stack([msg_of(x[adj[i] > 0]).mean(0) if has_nb[i] else np.zeros(F) for i in range(N)])
    mx = np.stack([msg_of(x[adj[i] > 0]).max(0) if has_nb[i] else np.zeros(F) for i in range(N)])
    np.testing.assert_allclose(outs[1e-6][:N] - x, mean, atol=1e-3)
    np.testing.assert_allclose(outs[200.0][:N] - x, mx, atol=2e-2)
    assert not np.allclose(mean[has_nb], mx[has_nb], atol=1e-2)


CASES = {
    "gcn": lambda: gcn.GCNConv(4),
    "sgc": lambda: sgc.SGConv(4, k=2),
    "gat": lambda: gat.GATConv(3, heads=2),
    "gatv2": lambda: gatv2.GATv2Conv(3, heads=2),
    "gin": lambda: gin.GINConv((5, 4)),
    "genconv": lambda: deepergcn.GENConv(F, msg_norm=True, learn_t=True),
    "appnp": lambda: appnp.APPNP(k=5, alpha=0.2),
    "deepergcn": lambda: deepergcn.DeeperGCN(hidden=8, num_classes=3, num_layers=3),
    "gcn_model": lambda: gcn.GCN(hidden=8, num_classes=3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_permutation_equivariance(name):
    layer = CASES[name]()
    g, x = make(6)
    params, f = init_apply(layer, g, g.nodes)
    perm = np.random.default_rng(7).permutation(N)
    gp, _ = make(6, perm=perm)
    out, out_p = np.asarray(f(params, g, g.nodes))[:N], np.asarray(f(params, gp, gp.nodes))[:N]
    np.testing.assert_allclose(out_p[perm], out, rtol=1e-4, atol=1e-5)
    assert not np.allclose(out_p, out, atol=1e-3)  # the permutation actually moved rows


@pytest.mark.parametrize("name", sorted(CASES))
def test_padding_does_not_change_real_nodes(name):
    layer = CASES[name]()
    g, x = make(8)
    params, f = init_apply(layer, g, g.nodes)
    big = make(8, budget=padding.Budget(N + 13, 160, 5))[0]
    rng = np.random.default_rng(9)
    poisoned = np.asarray(big.nodes).copy()
    poisoned[N:] = rng.normal(size=poisoned[N:].shape) * 10  # padding rows carry garbage
    out = np.asarray(f(params, g, g.nodes))[:N]
    out_big = np.asarray(f(params, big, poisoned))
    assert out_big.shape[0] == N + 13
    np.testing.assert_allclose(out_big[:N], out, rtol=1e-5, atol=1e-5)

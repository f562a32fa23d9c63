"""ωGCN: ω = 1 is GCN's propagation (the layer equals GCNConv with the same weights), ω = 0 the
identity (a plain linear map), any per-channel ω matches a dense numpy transcription of
S_ω = I − diag(ω)(I − Â), and D̃^{1/2} 1 is a fixed point of S_ω for every ω. ωGAT likewise
against GATConv and a dense attention matrix."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import gat, gcn, omega_gnn, padding

N, F, OUT = 9, 4, 3


def dense_ahat(s, r, n):
    a = np.zeros((n, n))
    a[r, s] = 1.0
    a += np.eye(n)
    d = a.sum(1)
    return a / np.sqrt(np.outer(d, d))


def test_omega_special_values_and_numpy_transcription():
    rng = np.random.default_rng(0)
    s, r = rng.integers(0, N, 16), rng.integers(0, N, 16)
    x = rng.normal(size=(N, F)).astype(np.float32)
    hg = padding.from_edges(s, r, N, nodes=x, symmetrize=True)
    m = hg.edge_mask
    ahat = dense_ahat(hg.senders[m], hg.receivers[m], N)
    g = padding.to_device(hg)
    layer = omega_gnn.OmegaGCNConv(OUT)
    omegas = jnp.asarray(np.stack([np.ones(F), np.zeros(F), [0.3, 1.0, 1.7, -0.4]]), jnp.float32)
    fixed = np.sqrt(1.0 / np.diag(ahat))  # D̃^{1/2} 1, since diag Â = 1 / d̃

    @jax.jit
    def run(g):
        p = nn.unbox(layer.init(jax.random.key(0), g, g.nodes))["params"]
        outs = jax.vmap(lambda w: layer.apply({"params": {**p, "omega": w}}, g, g.nodes))(omegas)
        gp = {"lin": {"kernel": p["lin"]["kernel"]}, "bias": p["lin"]["bias"]}
        ref = gcn.GCNConv(OUT).apply({"params": gp}, g, g.nodes)
        v = jnp.zeros((g.num_nodes, 1)).at[:N, 0].set(fixed)
        fix = jax.vmap(lambda w: omega_gnn.omega_propagate(g, jnp.tile(v, (1, F)), w))(omegas)
        return outs, ref, p, fix

    outs, ref, p, fix = jax.device_get(run(g))
    outs, ref, fix = outs[:, :N], ref[:N], fix[:, :N]
    np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=1e-5)
    k, b = p["lin"]["kernel"], p["lin"]["bias"]
    np.testing.assert_allclose(outs[1], x @ k + b, rtol=1e-5, atol=1e-5)
    for w, out in zip(np.asarray(omegas), outs):
        sx = x - w * (x - ahat @ x)  # per-channel S_ω
        np.testing.assert_allclose(out, sx @ k + b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fix, np.tile(fixed[:, None], (3, 1, F)), rtol=1e-5, atol=1e-6)


def test_omega_gat_special_values_and_numpy_transcription():
    """ωGAT: ω = 1 equals GATConv with the same weights, ω = 0 is W X + b, and any channel-wise
    ω [heads, C] matches a dense numpy S_att per head (softmax over N(i) ∪ {i})."""
    H, C = 2, 3
    rng = np.random.default_rng(1)
    s, r = rng.integers(0, N, 16), rng.integers(0, N, 16)
    keep = s != r  # GAT adds its own self-loop
    x = rng.normal(size=(N, F)).astype(np.float32)
    hg = padding.from_edges(s[keep], r[keep], N, nodes=x, symmetrize=True)
    m = hg.edge_mask
    adj = np.eye(N, dtype=bool)
    adj[hg.receivers[m], hg.senders[m]] = True
    g = padding.to_device(hg)
    layer = omega_gnn.OmegaGATConv(C, H)
    omegas = jnp.asarray(
        np.stack([np.ones((H, C)), np.zeros((H, C)), rng.uniform(-0.5, 2.0, (H, C))]), jnp.float32
    )

    @jax.jit
    def run(g):
        p = nn.unbox(layer.init(jax.random.key(0), g, g.nodes))["params"]
        outs = jax.vmap(lambda w: layer.apply({"params": {**p, "omega": w}}, g, g.nodes))(omegas)
        gp = {k: v for k, v in p.items() if k != "omega"}
        return outs, gat.GATConv(C, H).apply({"params": gp}, g, g.nodes), p

    outs, ref, p = jax.device_get(run(g))
    outs, ref = outs[:, :N], ref[:N]
    np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=1e-5)
    wx = (x @ p["lin"]["kernel"]).reshape(N, H, C)
    b = p["bias"]
    np.testing.assert_allclose(outs[1], wx.reshape(N, H * C) + b, rtol=1e-5, atol=1e-5)
    for w, out in zip(np.asarray(omegas), outs):
        want = []
        for k in range(H):
            src, dst = wx[:, k] @ p["att_src"][0, k], wx[:, k] @ p["att_dst"][0, k]
            e = dst[:, None] + src[None, :]
            e = np.where(e > 0, e, 0.2 * e)
            e = np.where(adj, np.exp(e - e.max(1, keepdims=True)), 0.0)
            s_att = e / e.sum(1, keepdims=True)
            want.append(wx[:, k] - w[k] * (wx[:, k] - s_att @ wx[:, k]))
        np.testing.assert_allclose(out, np.concatenate(want, 1) + b, rtol=1e-4, atol=1e-5)

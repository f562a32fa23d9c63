"""GKEDM: with its zero-initialised gate the plug-in equals the wrapped layer (GCN and GAT, same
weights); with a gate it matches a dense numpy transcription of gated neighbourhood attention;
the attention distillation loss is zero for identical models and equals a numpy KL otherwise."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import gat, gcn, gkedm, padding

N, F, OUT, H = 9, 4, 3, 2


def softmax_rows(logits, adj):
    e = np.where(adj, np.exp(logits - np.where(adj, logits, -np.inf).max(1, keepdims=True)), 0.0)
    return e / e.sum(1, keepdims=True)


def test_gate_zero_is_base_numpy_transcription_and_distillation():
    rng = np.random.default_rng(0)
    s, r = rng.integers(0, N, 18), rng.integers(0, N, 18)
    keep = s != r
    x = rng.normal(size=(N, F)).astype(np.float32)
    hg = padding.from_edges(s[keep], r[keep], N, nodes=x, symmetrize=True)
    m = hg.edge_mask
    adj = np.eye(N, dtype=bool)
    adj[hg.receivers[m], hg.senders[m]] = True
    g = padding.to_device(hg)
    layers = {b: gkedm.GKEDMConv(OUT, base=b, heads=H) for b in ("gcn", "gat")}
    bases = {"gcn": gcn.GCNConv(OUT), "gat": gat.GATConv(OUT)}
    gate = jnp.asarray(rng.normal(size=OUT), jnp.float32)

    @jax.jit
    def run(g):
        res = {}
        for b, layer in layers.items():
            p = nn.unbox(layer.init(jax.random.key(1), g, g.nodes))["params"]
            out0 = layer.apply({"params": p}, g, g.nodes)
            ref = bases[b].apply({"params": p["base"]}, g, g.nodes)
            res[b] = (out0, ref)
        p = nn.unbox(layers["gcn"].init(jax.random.key(1), g, g.nodes))["params"]
        p = {**p, "gate": gate}
        q = {**p, "query": jax.tree.map(lambda a: a + 0.5, p["query"])}

        def maps(params):
            out, st = layers["gcn"].apply({"params": params}, g, g.nodes, mutable="intermediates")
            return out, st["intermediates"]["attention"][0]

        (out_t, att_t), (_, att_s) = maps(p), maps(q)
        same = gkedm.attention_distillation_loss(g, att_t, att_t)
        diff = gkedm.attention_distillation_loss(g, att_t, att_s)
        return res, p, q, out_t, same, diff

    res, p, q, out_t, same, diff = jax.device_get(run(g))
    for b, (out0, ref) in res.items():
        np.testing.assert_allclose(out0[:N], ref[:N], rtol=1e-5, atol=1e-6, err_msg=b)
    h = res["gcn"][1][:N]

    def dense_att(params):
        qq = (h @ params["query"]["kernel"]).reshape(N, H, OUT)
        kk = (h @ params["key"]["kernel"]).reshape(N, H, OUT)
        return [softmax_rows(qq[:, k] @ kk[:, k].T / np.sqrt(OUT), adj) for k in range(H)]

    a_t, a_s = dense_att(p), dense_att(q)
    v = (h @ p["value"]["kernel"]).reshape(N, H, OUT)
    agg = np.concatenate([a_t[k] @ v[:, k] for k in range(H)], 1)
    want = h + p["gate"] * (agg @ p["out"]["kernel"] + p["out"]["bias"])
    np.testing.assert_allclose(out_t[:N], want, rtol=1e-4, atol=1e-5)
    kl = [
        np.where(adj, a_t[k] * (np.log(a_t[k] + 1e-30) - np.log(a_s[k] + 1e-30)), 0)
        for k in range(H)
    ]
    assert abs(float(same)) < 1e-7
    np.testing.assert_allclose(diff, np.mean([k.sum(1) for k in kl]), rtol=1e-4)
    assert float(diff) > 1e-4

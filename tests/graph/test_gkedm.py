"""GKEDM: with its zero-initialised gate the plug-in equals the wrapped layer (GCN and GAT, same
weights); with a gate it matches a dense numpy transcription of gated neighbourhood attention;
the attention distillation loss is zero for identical models and equals a numpy KL otherwise; the
distillation task's loss with KD weight 0 is the plain student loss and its KD term is that loss
on the teacher's and the student's maps."""

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


def test_distillation_task_kd_weight_zero_is_the_student_loss():
    """mode=distill (KD weight 1 by default): with KD weight 0 the training loss is the plain
    node-classification loss of the student; the KD term is the mean over layers of
    ``attention_distillation_loss`` between the teacher's fixed maps and the student's maps (read
    here straight from the sown intermediates)."""
    from netlab import configlib
    from netlab.graph import datasets as D
    from netlab.graph import generators, gkedm_task
    from netlab.graph import graphs as G
    from netlab.graph.task import l2_penalty, masked_cross_entropy

    s, r, y, x = generators.contextual_sbm((8, 8), 0.4, 0.05, feature_dim=5, mu=1.0, rng=0)
    part = np.arange(16) % 3
    ds = D.NodeDataset("csbm", x.astype(np.float32), y, s, r, 2, part == 0, part == 1, part == 2)
    over = {"model.hidden": "4", "distill.teacher_hidden": "8"}
    cfg = configlib.load("configs/graph/gkedm.py:mode=distill", overrides=over)
    g = padding.to_device(ds.graph())

    def random_params(model, seed):  # without compiling an init
        shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), g, g.nodes)))
        rng = np.random.default_rng(seed)
        return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)

    model = gkedm.GKEDM(hidden=4, num_classes=2, num_layers=2, conv="gcn")
    teacher = random_params(model.clone(hidden=8), 1)
    task = gkedm_task.GKEDMDistillation(cfg, dataset=ds, teacher_variables=teacher)
    assert task.kd_weight == 1.0
    task.kd_weight = 0.0
    assert task.teacher.hidden == 8 and len(task.teacher_maps) == cfg.model.num_layers
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))
    params = random_params(model, 2)["params"]
    rng = jax.random.key(3)

    @jax.jit
    def run(p):
        out = {"zero": task.loss_fn(p, {}, batch, rng, True)}
        g = G.from_arrays(batch)
        logits, st = task.model.apply(
            {"params": p}, g, g.nodes, train=True, rngs={"dropout": rng}, mutable="intermediates"
        )
        maps = [st["intermediates"][f"conv{i}"]["attention"][0] for i in range(2)]
        # node_classification's loss: masked CE + weight_decay/2 · Σ p²
        ce = masked_cross_entropy(logits, batch["y"], batch["train_mask"])
        out["plain"] = ce + l2_penalty(p, cfg.loss.weight_decay)
        out["kd"] = sum(
            gkedm.attention_distillation_loss(g, t, m) for t, m in zip(task.teacher_maps, maps)
        ) / len(maps)
        return out

    out = jax.device_get(run(params))
    loss_0, (aux, _) = out["zero"]
    np.testing.assert_allclose(loss_0, out["plain"], rtol=1e-6)
    np.testing.assert_allclose(aux["kd"], out["kd"], rtol=1e-5)
    assert float(out["kd"]) > 1e-4

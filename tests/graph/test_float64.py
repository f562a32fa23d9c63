"""float64 end to end: with 64-bit JAX and float64 parameters, GCN and GAT forward passes equal an
independent float64 numpy transcription of the papers' formulas to 1e-12, and a float64 GCN task
computes its loss without a single float32 value.

The suite runs in float32; these tests switch to 64-bit JAX only inside `jax.enable_x64(True)`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import gat, gcn, padding

N, F = 9, 5


def graph64(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, F))
    g = padding.from_edges(
        rng.integers(0, N, 30),
        rng.integers(0, N, 30),
        N,
        nodes=x,
        symmetrize=True,
        budget=padding.Budget(N + 3, 64, 2),
        dtype=np.float64,
    )
    adj = np.zeros((N, N))
    m = g.edge_mask
    adj[g.receivers[m], g.senders[m]] = 1.0  # adj[i, j] = 1 for an edge j -> i
    return g, x, adj


def init64(layer, g, seed=0):
    gd = padding.to_device(g)
    params = nn.unbox(layer.init(jax.random.key(seed), gd, gd.nodes))
    # shift every parameter so that zero-initialised biases take part too
    params = jax.tree.map(
        lambda v: v + 0.1 * jnp.arange(v.size, dtype=v.dtype).reshape(v.shape) / v.size, params
    )
    out = np.asarray(layer.apply(params, gd, gd.nodes))
    return jax.tree.map(np.asarray, params)["params"], out


def test_gcn_forward_float64_matches_numpy():
    with jax.enable_x64(True):
        g, x, adj = graph64()
        assert g.edge_weight.dtype == np.float64 and g.norm["gcn_edge"].dtype == np.float64
        p, out = init64(gcn.GCNConv(4, dtype=jnp.float64, param_dtype=jnp.float64), g)
    assert out.dtype == np.float64 and p["lin"]["kernel"].dtype == np.float64
    a = adj + np.eye(N)  # Kipf & Welling eq. 2
    d = 1.0 / np.sqrt(a.sum(1))
    expect = (d[:, None] * a * d[None, :]) @ x @ p["lin"]["kernel"] + p["bias"]
    np.testing.assert_allclose(out[:N], expect, rtol=1e-12, atol=1e-12)


def test_gat_forward_float64_matches_numpy():
    heads, ch = 3, 2
    with jax.enable_x64(True):
        g, x, adj = graph64(1)
        layer = gat.GATConv(ch, heads, dtype=jnp.float64, param_dtype=jnp.float64)
        p, out = init64(layer, g)
    assert out.dtype == np.float64
    h = (x @ p["lin"]["kernel"]).reshape(N, heads, ch)  # W h_j, per head
    src = (h * p["att_src"][0]).sum(-1)  # a_srcᵀ W h_j   [N, H]
    dst = (h * p["att_dst"][0]).sum(-1)  # a_dstᵀ W h_i
    expect = np.zeros((N, heads, ch))
    for i in range(N):  # eqs. 1-4 over N(i) ∪ {i}
        nb = np.nonzero(adj[i] + np.eye(N)[i])[0]
        e = dst[i][None, :] + src[nb]
        e = np.where(e > 0, e, 0.2 * e)
        alpha = np.exp(e - e.max(0))
        alpha /= alpha.sum(0)
        expect[i] = (alpha[:, :, None] * h[nb]).sum(0)
    expect = expect.reshape(N, heads * ch) + p["bias"]  # concatenated heads (eq. 5)
    np.testing.assert_allclose(out[:N], expect, rtol=1e-12, atol=1e-12)


def test_float64_node_classification_loss_has_no_float32():
    import ml_collections

    from configs import common
    from netlab.graph import task as T
    from netlab.nn import precision

    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(dict(name="gcn", hidden=4, dropout=0.5))
    c.data = ml_collections.ConfigDict(
        dict(
            name="karate",
            data_dir="",
            split=0,
            row_normalize=True,
            edge_sharded=False,
            precompute=True,
        )
    )
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    c.train.compute_dtype = "float64"
    with jax.enable_x64(True):
        task = T.NodeClassification(c)
        assert task.policy == precision.Policy(jnp.float64, jnp.float64)
        params = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
        batch = jax.tree.map(jnp.asarray, task.train_batch(0))
        loss_fn = lambda p: task.loss_fn(p, {}, batch, jax.random.key(1), True)[0]
        text = str(jax.make_jaxpr(jax.value_and_grad(loss_fn))(params))
        loss = jax.eval_shape(loss_fn, params)
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(params))
    assert loss.dtype == jnp.float64 and "f64" in text and "f32" not in text

"""float64 end to end: with 64-bit JAX and float64 parameters, GCN and GAT forward passes equal an
independent float64 numpy transcription of the papers' formulas to 1e-12, and a float64 GCN task
computes its loss without a single float32 value.

The suite runs in float32; these tests switch to 64-bit JAX only inside `jax.enable_x64(True)`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.graph import appnp, digrac, gat, gatv2, gcn, gin, grand, lightgcn, padding, sgc, sheaf

N, F = 9, 5


def graph64(seed=0, symmetrize=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, F))
    g = padding.from_edges(
        rng.integers(0, N, 30),
        rng.integers(0, N, 30),
        N,
        nodes=x,
        symmetrize=symmetrize,
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
    return jax.tree.map(np.asarray, params).get("params", {}), out


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


# ------------------------------------------------------------------------------------------------
# Every other registered layer (GENConv: tests/graph/test_genconv.py) against a float64 numpy
# transcription of its paper's formula, with shifted (non-default) parameters.
# ------------------------------------------------------------------------------------------------


def layer64(layer, seed=0, directed=False):
    """(params, out [N, ...], x, adj) for `layer` on float64 features; adj[i, j] = 1 for j -> i.

    The graph's edge weights and host-precomputed coefficients are float32 (as a graph built with
    the default dtype has): a float64 layer must not compute through them in float32."""
    with jax.enable_x64(True):
        g, x, adj = graph64(seed, symmetrize=not directed)
        g = g.replace(
            edge_weight=g.edge_weight.astype(np.float32),
            norm={k: v.astype(np.float32) for k, v in (g.norm or {}).items()} or None,
        )
        p, out = init64(layer, g, seed)
    assert out.dtype == np.float64
    return p, out[:N], x, adj


def sym_norm(a):
    d = a.sum(1)
    dinv = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    return dinv[:, None] * a * dinv[None, :]


def close(out, expect):
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def test_sgc_appnp_lightgcn_gin_float64_match_numpy():
    p, out, x, adj = layer64(sgc.SGConv(3, k=3, **F64))
    s = sym_norm(adj + np.eye(N))  # Wu et al. eq. 8
    close(out, s @ s @ s @ x @ p["lin"]["kernel"] + p["lin"]["bias"])
    _, out, x, adj = layer64(appnp.APPNP(k=4, alpha=0.15, **F64), seed=1)
    s, z = sym_norm(adj + np.eye(N)), x  # Klicpera et al. eq. 8
    for _ in range(4):
        z = 0.85 * s @ z + 0.15 * x
    close(out, z)
    p, out, x, adj = layer64(lightgcn.LGConv(3, **F64), seed=2)
    close(out, sym_norm(adj) @ x @ p["lin_src"]["kernel"])  # He et al. eq. 3, no self-loops
    p, out, x, adj = layer64(gin.GINConv((6, 3), eps=0.3, train_eps=True, **F64), seed=3)
    h = (1 + p["eps"]) * x + adj @ x  # Xu et al. eq. 4.1
    h = np.maximum(h @ p["mlp"]["lin0"]["kernel"] + p["mlp"]["lin0"]["bias"], 0)
    close(out, h @ p["mlp"]["lin1"]["kernel"] + p["mlp"]["lin1"]["bias"])


def test_gatv2_float64_matches_numpy():
    heads, ch = 2, 3
    p, out, x, adj = layer64(gatv2.GATv2Conv(ch, heads, **F64), seed=4)
    xs = (x @ p["lin_l"]["kernel"] + p["lin_l"]["bias"]).reshape(N, heads, ch)
    xt = (x @ p["lin_r"]["kernel"] + p["lin_r"]["bias"]).reshape(N, heads, ch)
    expect = np.zeros((N, heads, ch))
    for i in range(N):  # Brody et al. eq. 7 over N(i) ∪ {i}
        nb = np.nonzero(adj[i] + np.eye(N)[i])[0]
        e = xs[nb] + xt[i][None]
        e = (np.where(e > 0, e, 0.2 * e) * p["att"][0]).sum(-1)  # [|nb|, H]
        a = np.exp(e - e.max(0))
        expect[i] = ((a / a.sum(0))[:, :, None] * xs[nb]).sum(0)
    close(out, expect.reshape(N, heads * ch) + p["bias"])


def test_grand_float64_matches_numpy_rk4():
    layer = grand.AttentionDiffusion(4, time=1.3, num_steps=3, heads=2, key_dim=3, **F64)
    p, out, x, adj = layer64(layer, seed=5)
    h = x @ p["lin_src"]["kernel"]
    q = np.einsum("nf,fhd->nhd", h, p["query"])
    k = np.einsum("nf,fhd->nhd", h, p["key"])
    logits = np.einsum("ihd,jhd->hij", k, q) / 3  # Chamberlain et al. eq. 9: (W_K x_i)·(W_Q x_j)
    att = np.where(adj[None] > 0, np.exp(logits - logits.max()), 0.0)
    att = (att / np.maximum(att.sum(-1, keepdims=True), 1e-300)).mean(0)
    f = lambda z: att @ z - z  # noqa: E731  (eq. 3, GRAND-l)
    z, dt = h, 1.3 / 3
    for _ in range(3):  # classical RK4
        k1 = f(z)
        k2 = f(z + dt / 2 * k1)
        k3 = f(z + dt / 2 * k2)
        k4 = f(z + dt * k3)
        z = z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    close(out, z)


@pytest.mark.parametrize("map_type", ["diag", "general"])
def test_sheaf_layer_float64_matches_numpy(map_type):
    d, width = 2, 4
    layer = sheaf.SheafDiffusion(width, d=d, map_type=map_type, **F64)
    p, out, x, adj = layer64(layer, seed=6)
    h = x @ p["lin_src"]["kernel"]
    V = p["sheaf_learner_0"]["V"]["kernel"]
    F = {}  # F[v, u] = F_{v◁{v,u}} = tanh(V [h_v || h_u]) (Bodnar et al. eq. 6, no bias)
    for v, u in zip(*np.nonzero(adj.T)):
        m = np.tanh(np.concatenate([h[v], h[u]]) @ V)
        F[v, u] = np.diag(m) if map_type == "diag" else m.reshape(d, d)
    n_lap = np.zeros((N * d, N * d))  # sheaf Laplacian (Definition 2.1), d x d blocks
    for (v, u), fv in F.items():
        n_lap[v * d : (v + 1) * d, v * d : (v + 1) * d] += fv.T @ fv
        n_lap[v * d : (v + 1) * d, u * d : (u + 1) * d] -= fv.T @ F[u, v]
    dinv = np.zeros_like(n_lap)  # (D + I)^-1/2, block-diagonal (augmented normalisation)
    for v in range(N):
        blk = n_lap[v * d : (v + 1) * d, v * d : (v + 1) * d] + np.eye(d)
        w, U = np.linalg.eigh(blk)
        dinv[v * d : (v + 1) * d, v * d : (v + 1) * d] = U @ np.diag(w**-0.5) @ U.T
    delta = dinv @ n_lap @ dinv
    xs = h.reshape(N * d, width // d)  # stalk i of node v: channels [i f/d, (i+1) f/d)
    hs = np.kron(np.eye(N), p["left_0"]) @ xs @ p["right_0"]  # eq. 8
    hs = delta @ hs
    hs = np.where(hs > 0, hs, np.expm1(np.minimum(hs, 0)))  # ELU
    eps = np.tile(1 + np.tanh(p["epsilon_0"]), N)[:, None]
    close(out, (eps * xs - hs).reshape(N, width))


def test_dimpa_float64_matches_numpy():
    tau, hops = 0.5, 2
    p, out, x, adj = layer64(digrac.DIMPAConv(6, hops=hops, tau=tau, **F64), seed=7, directed=True)
    a = adj.T  # a[i, j] = 1 for an edge i -> j (A_ij of He et al.)
    q = p["dimpa"]
    zs = []
    for name, op in (("s", a), ("t", a.T)):  # §3.2: A_s = D_s^-1 (A + τI), A_t = D_t^-1 (Aᵀ + τI)
        op = op + tau * np.eye(N)
        op = op / op.sum(1, keepdims=True)
        h = np.maximum(x @ q[f"mlp_{name}_0"]["kernel"] + q[f"mlp_{name}_0"]["bias"], 0)
        h = h @ q[f"mlp_{name}_1"]["kernel"] + q[f"mlp_{name}_1"]["bias"]
        w = q[f"omega_{name}"]
        zs.append(sum(w[k] * np.linalg.matrix_power(op, k) @ h for k in range(hops + 1)))
    close(out, np.concatenate(zs, 1))


def test_digrac_hermitian_features_keep_float64():
    """The spectral input features of DIGRAC are computed in float64 and not rounded through
    float32 when a float64 run asks for float64."""
    rng = np.random.default_rng(8)
    s, r = rng.integers(0, 20, 60), rng.integers(0, 20, 60)
    x = digrac.hermitian_features(s, r, 20, 3, np.float64)
    assert x.dtype == np.float64
    assert not np.array_equal(x, x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(digrac.hermitian_features(s, r, 20, 3), x, rtol=1e-6, atol=1e-6)

"""GRAND: the linear diffusion ODE equals expm(t(A - I)) X; solvers converge at their order."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from netlab.graph import grand, padding


def _graph(n=12, p=0.3, seed=0, feats=5):
    rng = np.random.default_rng(seed)
    a = np.triu(rng.random((n, n)) < p, 1)
    a[np.arange(n - 1), np.arange(1, n)] = True  # a path keeps it connected
    s, r = np.nonzero(a)
    x = rng.standard_normal((n, feats)).astype(np.float32)
    return padding.from_edges(s, r, n, nodes=x, symmetrize=True), x


def _dense(graph, edge_w, self_w=None):
    n = int(np.asarray(graph.node_mask).sum())
    A = np.zeros((n, n))
    m = np.asarray(graph.edge_mask)
    np.add.at(
        A,
        (np.asarray(graph.receivers)[m], np.asarray(graph.senders)[m]),
        np.asarray(edge_w, np.float64)[m],
    )
    if self_w is not None:
        A += np.diag(np.asarray(self_w, np.float64)[:n])
    return A


def _mean_weights(graph):
    deg = np.bincount(
        np.asarray(graph.receivers)[np.asarray(graph.edge_mask)], minlength=graph.num_nodes
    )
    w = 1.0 / np.maximum(deg, 1)[np.asarray(graph.receivers)]
    return np.where(np.asarray(graph.edge_mask), w, 0.0)


def test_fixed_diffusivity_matches_expm_and_solver_orders():
    g, x = _graph()
    n = x.shape[0]
    with jax.enable_x64(True):
        w = jnp.asarray(_mean_weights(g), jnp.float64)
        A = _dense(g, w)
        np.testing.assert_allclose(A.sum(1), 1.0)  # row-stochastic diffusivity
        t = 1.5
        exact = scipy.linalg.expm(t * (A - np.eye(n))) @ x.astype(np.float64)
        x0 = jnp.zeros((g.num_nodes, x.shape[1]), jnp.float64).at[:n].set(x)
        gd = jax.tree.map(jnp.asarray, g)
        f = lambda z: grand.diffusion_rhs(gd, z, w)  # noqa: E731
        run = jax.jit(grand.integrate_fixed, static_argnums=(0, 2, 3, 4))
        errs = {}
        for method in ("euler", "rk4"):
            errs[method] = [
                float(np.abs(np.asarray(run(f, x0, t, k, method))[:n] - exact).max())
                for k in (8, 16, 32)
            ]
        # observed order from successive step doublings
        order = {m: np.log2(np.array(e[:-1]) / np.array(e[1:])) for m, e in errs.items()}
        assert np.all(np.abs(order["euler"] - 1.0) < 0.25), errs
        assert np.all(np.abs(order["rk4"] - 4.0) < 0.5), errs
        assert errs["rk4"][-1] < 1e-6
        xs, info = jax.jit(
            lambda z: grand.integrate_dopri5(f, z, t, rtol=1e-8, atol=1e-10, max_steps=200)
        )(x0)
        assert bool(info["reached"]) and 3 < int(info["accepted"]) < 200
        np.testing.assert_allclose(np.asarray(xs)[:n], exact, atol=1e-6)
        # a too-small step budget stops short of T and says so
        _, info = grand.integrate_dopri5(f, x0, t, rtol=1e-12, atol=1e-14, max_steps=3)
        assert not bool(info["reached"])


def test_grand_linear_equals_expm_of_its_attention():
    g, x = _graph(seed=1)
    n = x.shape[0]
    with jax.enable_x64(True):
        model = grand.GRAND(
            hidden_dim=6,
            num_classes=3,
            time=2.0,
            method="rk4",
            num_steps=40,
            heads=2,
            key_dim=4,
            self_loops=True,
            input_dropout=0.0,
        )
        gd = jax.tree.map(jnp.asarray, g)
        xin = jnp.zeros((g.num_nodes, x.shape[1]), jnp.float64).at[:n].set(x)
        params = nn.unbox(model.init(jax.random.key(0), gd, xin))
        h0 = model.apply(params, xin, method=lambda m, v: m.encoder(v))
        ea, sa = model.apply(params, gd, h0, method=lambda m, gg, v: m.attention(gg, v))
        A = _dense(g, ea, sa)
        np.testing.assert_allclose(A.sum(1), 1.0, rtol=1e-6)  # softmax accumulates in f32
        assert np.std(A[A > 0]) > 1e-3  # attention is not uniform
        hT = model.apply(params, gd, h0, method=lambda m, gg, v: m.diffuse(gg, v))
        exact = scipy.linalg.expm(2.0 * (A - np.eye(n))) @ np.asarray(h0)[:n]
        np.testing.assert_allclose(np.asarray(hT)[:n], exact, atol=1e-7)


@pytest.mark.parametrize("nonlinear,method", [(True, "rk4"), (False, "dopri5")])
def test_grand_permutation_equivariant_and_differentiable(nonlinear, method):
    """One forward pass on the disjoint union of a graph and its relabelled copy: node i of the
    first copy and node n + perm[i] of the second must get the same output."""
    g, x = _graph(seed=2)
    n = x.shape[0]
    m = np.asarray(g.edge_mask)
    s, r = np.asarray(g.senders)[m], np.asarray(g.receivers)[m]
    perm = np.random.default_rng(3).permutation(n)
    xp = np.zeros_like(x)
    xp[perm] = x
    union = padding.from_edges(
        np.concatenate([s, n + perm[s]]),
        np.concatenate([r, n + perm[r]]),
        2 * n,
        nodes=np.concatenate([x, xp]),
    )
    model = grand.GRAND(
        hidden_dim=8,
        num_classes=3,
        time=1.0,
        method=method,
        num_steps=4,
        max_steps=16,
        nonlinear=nonlinear,
        input_dropout=0.0,
    )
    out, params = jax.jit(model.init_with_output)(jax.random.key(0), union, union.nodes)
    out = np.asarray(out)
    np.testing.assert_allclose(out[n + perm], out[:n], rtol=1e-4, atol=1e-5)
    assert np.abs(out[:n] - out[:n].mean(0)).max() > 1e-4
    if method == "dopri5":  # reverse mode through the bounded adaptive solver
        params = nn.unbox(params)
        grads = jax.jit(
            jax.grad(lambda p: jnp.sum(model.apply(p, union, union.nodes)[: 2 * n] ** 2))
        )(params)
        norms = [float(jnp.linalg.norm(v)) for v in jax.tree.leaves(grads)]
        assert all(np.isfinite(norms)) and min(norms) > 0


@pytest.mark.slow
def test_grand_node_classification_task_on_csbm():
    import ml_collections
    import optax

    from netlab.graph import datasets as D
    from netlab.graph import generators
    from netlab.graph.continuous_task import DiffusionNodeClassification

    s, r, y, x = generators.contextual_sbm((40, 40), 0.2, 0.02, feature_dim=8, mu=1.0, rng=0)
    split = np.random.default_rng(1).permutation(
        3 * np.ones(80, int) - (np.arange(80) < 16) - (np.arange(80) < 32)
    )
    ds = D.NodeDataset("csbm", x, y, s, r, 2, split == 1, split == 2, split == 3)
    cfg = ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(
                name="grand",
                hidden_dim=8,
                time=3.0,
                method="rk4",
                num_steps=3,
                heads=1,
                key_dim=4,
                self_loops=True,
                nonlinear=False,
                input_dropout=0.0,
                dropout=0.0,
            ),
            data=dict(name="csbm", data_dir="", split=0, row_normalize=False),
            loss=dict(weight_decay=5e-3, weight_decay_scope=""),
            train=dict(compute_dtype="float32"),
        )
    )
    task = DiffusionNodeClassification(cfg, dataset=ds)
    params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
    arrays = jax.tree.map(jnp.asarray, task.arrays)
    tx = optax.adam(0.02)

    @jax.jit
    def train(params):
        def body(carry, i):
            p, o = carry
            (loss, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(
                p, {}, arrays, jax.random.key(i), True
            )
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(60))

    (params, _), losses = train(params)
    acc = task.evaluate(params, {}, 60, "")[0]
    assert float(losses[-1]) < 0.5 * float(losses[0])
    # weak features (class means ~1.4 apart, unit noise) + homophilous graph: diffusion averages
    # the noise
    assert acc["test_accuracy"] > 0.8


def _authors_attention(x, edges, wq, bq, wk, bk):
    """numpy transcription of graph-neural-pde's SpGraphTransAttentionLayer (scaled_dot,
    square_plus, attention_norm_idx=1) on PyG's edge_index (self-loops included), heads averaged:
    torch_sparse.spmm then aggregates A[e0, e1] x[e1]."""
    h, dk = wq.shape[1:]
    q = (np.einsum("nf,fhd->nhd", x, wq) + bq)[edges[0]]
    k = (np.einsum("nf,fhd->nhd", x, wk) + bk)[edges[1]]
    prods = (q * k).sum(-1) / np.sqrt(dk)
    out = prods - prods.max()
    out = (out + np.sqrt(out**2 + 4)) / 2
    norm = np.zeros((x.shape[0], h))
    np.add.at(norm, edges[1], out)
    att = (out / (norm[edges[1]] + 1e-16)).mean(1)
    A = np.zeros((x.shape[0], x.shape[0]))
    np.add.at(A, (edges[0], edges[1]), att)
    return A


def test_grand_authors_variant_matches_their_attention_and_source_ode():
    """The authors'-code options (squareplus over each neighbour's edges, sqrt(d_k), biases,
    alpha = sigmoid(a), source beta X(0)) against a numpy transcription of their layers, and the
    ODE with the source term against expm of the augmented linear system."""
    g, x = _graph(seed=2)
    n = x.shape[0]
    with jax.enable_x64(True):
        model = grand.GRAND(
            hidden_dim=6,
            num_classes=3,
            time=1.5,
            method="rk4",
            num_steps=40,
            heads=2,
            key_dim=4,
            self_loops=True,
            input_dropout=0.0,
            attention_norm="squareplus",
            score_scale="sqrt_dk",
            normalize_over="senders",
            qk_bias=True,
            diffusion_scale="sigmoid",
            source=True,
        )
        gd = jax.tree.map(jnp.asarray, g)
        xin = jnp.zeros((g.num_nodes, x.shape[1]), jnp.float64).at[:n].set(x)
        params = nn.unbox(model.init(jax.random.key(0), gd, xin))["params"]
        params = dict(params, alpha=jnp.float64(0.7), beta=jnp.float64(-0.4))
        params["query"] = params["query"] * 40.0  # make the attention far from uniform
        variables = {"params": params}
        h0 = model.apply(variables, xin, method=lambda m, v: m.encoder(v))
        ea, sa = model.apply(variables, gd, h0, method=lambda m, gg, v: m.attention(gg, v))
        A = _dense(g, ea, sa)
        m = np.asarray(g.edge_mask)
        s, r = np.asarray(g.senders)[m], np.asarray(g.receivers)[m]
        edges = np.concatenate([np.stack([r, s]), np.stack([np.arange(n)] * 2)], 1)
        p = {k: np.asarray(v, np.float64) for k, v in params.items() if not isinstance(v, dict)}
        # eq. 9 names W_K the receiver's map, the authors' code calls it Q: pass ours swapped
        ref = _authors_attention(
            np.asarray(h0)[:n], edges, p["key"], p["key_bias"], p["query"], p["query_bias"]
        )
        np.testing.assert_allclose(A, ref, atol=1e-12)
        np.testing.assert_allclose(A.sum(0), 1.0, atol=1e-9)  # column-stochastic
        assert np.std(A[A > 0]) > 1e-2
        hT = model.apply(variables, gd, h0, method=lambda m, gg, v: m.diffuse(gg, v))
        alpha, beta = 1 / (1 + np.exp(-0.7)), -0.4
        M = np.block([[alpha * (A - np.eye(n)), beta * np.eye(n)], [np.zeros((n, 2 * n))]])
        h = np.asarray(h0)[:n]
        exact = (scipy.linalg.expm(1.5 * M) @ np.concatenate([h, h]))[:n]
        np.testing.assert_allclose(np.asarray(hT)[:n], exact, atol=1e-7)

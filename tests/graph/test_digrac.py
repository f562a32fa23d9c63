"""DIGRAC: flow-imbalance loss vs numpy, ARI vs scikit-learn, DIMPA operators, learning on a
DSBM."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import adjusted_rand_score

from netlab.graph import digrac, padding
from netlab.graph import generators as gen


def _dsbm(n=150, k=3, p=0.2, eta=0.05, seed=0, style="cyclic"):
    F = gen.meta_graph(style, k, eta)
    return gen.dsbm(n, k, p, F, rng=seed)


def _numpy_ci(P, A, norm):
    W = P.T @ A @ P
    V = P.T @ (A.sum(0) + A.sum(1))
    K = P.shape[1]
    ci = np.zeros((K, K))
    for k in range(K):
        for l in range(K):
            d = abs(W[k, l] - W[l, k])
            ci[k, l] = {
                "plain": d / (W[k, l] + W[l, k] + 1e-8),
                "vol_sum": 2 * d / (V[k] + V[l] + 1e-8),
                "vol_min": d / (min(V[k], V[l]) + 1e-8),
                "vol_max": d / (max(V[k], V[l]) + 1e-8),
            }[norm]
    return ci


@pytest.mark.parametrize("norm", digrac.NORMALISATIONS)
def test_flow_imbalance_loss_matches_numpy(norm):
    s, r, y = _dsbm(n=60, k=4, p=0.3, eta=0.2, seed=1)
    n = len(y)
    src = padding.to_device(digrac.dimpa_graphs(s, r, n)["source"])
    rng = np.random.default_rng(2)
    P = np.zeros((src.num_nodes, 4), np.float32)
    P[:n] = rng.dirichlet(np.ones(4), n)
    A = np.zeros((n, n))
    A[s, r] = 1
    AP = np.asarray(digrac.adjacency_matmul(src, jnp.asarray(P)))
    np.testing.assert_allclose(AP[:n], A @ P[:n], rtol=1e-5, atol=1e-5)
    deg = np.asarray(digrac.total_degree(src))
    np.testing.assert_allclose(deg[:n], A.sum(0) + A.sum(1))
    ci = np.asarray(digrac.flow_imbalance(jnp.asarray(P), jnp.asarray(AP), jnp.asarray(deg), norm))
    ref = _numpy_ci(P[:n].astype(np.float64), A, norm)
    np.testing.assert_allclose(ci, ref, rtol=1e-4, atol=1e-6)
    assert np.all(ref <= 1 + 1e-6) and np.all(ref >= 0)
    for beta in (1, 3, 6):
        iu = np.triu_indices(4, 1)
        expect = 1 - np.sort(ref[iu])[::-1][:beta].mean()
        loss = digrac.imbalance_loss(jnp.asarray(P), jnp.asarray(AP), jnp.asarray(deg), beta, norm)
        np.testing.assert_allclose(loss, expect, rtol=1e-4)


def test_planted_clustering_has_lower_loss_than_random():
    s, r, y = _dsbm(n=120, k=3, p=0.2, eta=0.1, seed=3)
    n = len(y)
    src = padding.to_device(digrac.dimpa_graphs(s, r, n)["source"])
    deg = digrac.total_degree(src)

    def loss_of(labels):
        P = np.zeros((src.num_nodes, 3), np.float32)
        P[np.arange(n), labels] = 1
        P = jnp.asarray(P)
        return float(digrac.imbalance_loss(P, digrac.adjacency_matmul(src, P), deg, 3))

    planted = loss_of(y)
    rng = np.random.default_rng(4)
    randoms = [loss_of(rng.integers(0, 3, n)) for _ in range(20)]
    # Expected planted value: clusters of m nodes, cut k->l has ~0.9 p m^2 edges and
    # l->k ~0.1 p m^2;
    # each volume ~ p m^2 (inside, 0.5 p both ways, counted in + out) + 2 p m^2 (two neighbours)
    # = 3 p m^2, so CI^vol_sum = 2 * 0.8 / 6 for every pair and the loss is 1 - 0.8/3.
    assert abs(planted - (1 - 0.8 / 3)) < 0.04
    assert planted < min(randoms) - 0.15


def test_ari_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 4, 80), rng.integers(0, 3, 80)
        np.testing.assert_allclose(
            digrac.adjusted_rand_index(a, b), adjusted_rand_score(a, b), atol=1e-12
        )
    a = rng.integers(0, 5, 50)
    assert digrac.adjusted_rand_index(a, (a + 2) % 5) == pytest.approx(
        1.0
    )  # label names do not matter


def test_dimpa_operators_are_row_normalised():
    s, r, y = _dsbm(n=40, k=2, p=0.2, seed=5)
    n, tau = len(y), 0.5
    g = digrac.dimpa_graphs(s, r, n, tau)
    A = np.zeros((n, n))
    A[s, r] = 1
    for key, M in (("source", A), ("target", A.T)):
        gr = g[key]
        dense = np.zeros((n, n))
        m = np.asarray(gr.edge_mask)
        dense[np.asarray(gr.receivers)[m], np.asarray(gr.senders)[m]] = np.asarray(
            gr.norm["rw_edge"]
        )[m]
        dense += np.diag(np.asarray(gr.norm["rw_self"])[:n])
        expect = (M + tau * np.eye(n)) / (M.sum(1) + tau)[:, None]
        np.testing.assert_allclose(dense, expect, rtol=1e-6)


def test_digrac_permutation_equivariant():
    s, r, y = _dsbm(n=30, k=3, p=0.3, seed=6)
    n = len(y)
    perm = np.random.default_rng(7).permutation(n)
    x = np.random.default_rng(8).standard_normal((n, 5)).astype(np.float32)
    xp = np.zeros_like(x)
    xp[perm] = x
    # disjoint union of the graph and its relabelled copy
    us, ur = np.concatenate([s, n + perm[s]]), np.concatenate([r, n + perm[r]])
    g = digrac.dimpa_graphs(us, ur, 2 * n)
    xu = np.zeros((g["source"].num_nodes, 5), np.float32)
    xu[: 2 * n] = np.concatenate([x, xp])
    model = digrac.DIGRAC(3, hidden=8, hops=2)
    (P, z), _ = jax.jit(model.init_with_output)(jax.random.key(0), g["source"], g["target"], xu)
    P, z = np.asarray(P), np.asarray(z)
    np.testing.assert_allclose(z[n + perm], z[:n], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(P[n + perm], P[:n], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(P[: 2 * n].sum(1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_digraph_clustering_task_trains_and_reports_ari():
    import ml_collections

    from netlab.graph.digrac_task import DigraphClustering

    cfg = ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(hidden=16, hops=2, dropout=0.5, tau=0.5),
            data=dict(
                n=120,
                k=3,
                p=0.25,
                eta=0.05,
                style="cyclic",
                ambient=False,
                size_ratio=1.0,
                graph_seed=1,
            ),
            loss=dict(beta=3, normalisation="vol_sum"),
        )
    )
    task = DigraphClustering(cfg)
    params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
    ari0 = task.evaluate(params, {}, 0, "")[0]["ari"]
    arrays = jax.tree.map(jnp.asarray, task.arrays)
    tx = optax.adam(0.01)

    @jax.jit
    def train(params):
        def body(carry, i):
            p, o = carry
            (loss, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(
                p, {}, arrays, jax.random.key(i), True
            )
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(150))

    (params, _), losses = train(params)
    ari = task.evaluate(params, {}, 150, "")[0]["ari"]
    # the restart criterion: dropout off, so deterministic, and the same as loss_fn(train=False)
    obj = float(task.objective(params))
    assert obj == float(task.objective(params))
    assert obj == pytest.approx(
        float(task.loss_fn(params, {}, arrays, jax.random.key(5), False)[0]), rel=1e-6
    )
    assert float(losses[-10:].mean()) < float(losses[:10].mean()) - 0.1
    assert ari0 < 0.5 and ari > 0.9, (ari0, ari)

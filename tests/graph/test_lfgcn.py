"""LFGCN: the Lévy-flight walk P^(γ) is row-stochastic with a zero diagonal and non-negative
entries, reaches beyond the 1-hop neighbourhood for γ < 1 and is the simple random walk D^-1 A at
γ = 1; P-DropEdge at τ = 0 removes exactly round(rate · m) undirected edges, both directions, the
highest networkx edge betweenness first, and at τ > 0 still exactly that many."""

import jax
import networkx as nx
import numpy as np

from netlab.graph import lfgcn, padding


def graph_edges():
    g = nx.barbell_graph(4, 3)  # two K4 joined by a path: bridges carry the most shortest paths
    g.add_edges_from([(0, 11), (11, 12)])  # a pendant path (distinct betweenness values)
    e = np.array(g.edges())
    return g, np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])


def test_fractional_walk_is_stochastic_and_long_range():
    g, s, r = graph_edges()
    n = g.number_of_nodes()
    a = nx.to_numpy_array(g, nodelist=range(n))
    for gamma in (0.3, 0.7, 1.0):
        p = lfgcn.fractional_walk(s, r, n, gamma)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-10)
        np.testing.assert_allclose(np.diag(p), 0.0, atol=0)
        assert p.min() >= -1e-10
        if gamma < 1:
            assert np.all(p[a == 0][~np.eye(n, dtype=bool)[a == 0]] > 1e-6)  # every pair reachable
    np.testing.assert_allclose(p, a / a.sum(1, keepdims=True), atol=1e-10)


def test_betweenness_dropedge_drops_highest_first_at_rate():
    g, s, r = graph_edges()
    n = g.number_of_nodes()
    hg = padding.from_edges(s, r, n, nodes=np.ones((n, 2), np.float32), symmetrize=True)
    eb = nx.edge_betweenness_centrality(g)
    ranked = sorted(eb, key=eb.get, reverse=True)
    m, rate = len(ranked), 0.25
    k = int(np.floor(rate * m + 0.5))
    assert eb[ranked[k - 1]] > eb[ranked[k]]  # the top-k set is unambiguous
    model = lfgcn.LFGCN(drop_rate=rate, drop_temperature=0.0)
    soft = lfgcn.LFGCN(drop_rate=rate, drop_temperature=1.0)
    dg = padding.to_device(model.prepare_graph(hg))
    keys = jax.random.split(jax.random.key(0), 4)
    run = jax.jit(
        lambda g, ks: (
            model.drop_edges(g, ks[0]).edge_mask,
            jax.vmap(lambda kk: soft.drop_edges(g, kk).edge_mask)(ks),
        )
    )
    hard, sampled = jax.device_get(run(dg, keys))
    real = np.asarray(hg.edge_mask)
    gone = {tuple(sorted(e)) for e in zip(hg.senders[real & ~hard], hg.receivers[real & ~hard])}
    assert gone == {tuple(sorted(e)) for e in ranked[:k]}
    assert (real & ~hard).sum() == 2 * k and not (hard & ~real).any()
    assert np.all((real & ~sampled).sum(1) == 2 * k)

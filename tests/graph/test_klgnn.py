"""k,l-GNN: tuple sets (all ordered k-tuples, or a sample of the budgeted size); with k = 1 and
k = 2 it separates 1-WL-equivalent pairs (C6 vs 2×C3, decalin vs bicyclopentyl, two CSL graphs)
that GIN maps to equal outputs, and with every tuple enumerated it is invariant to relabelling."""

import jax
import networkx as nx
import numpy as np

from netlab.graph import gin, klgnn, padding, synthetic_wl
from tests.graph.host_params import random_params


def test_tuple_sets():
    assert klgnn.tuples(4, 1, 10, 0).tolist() == [[0], [1], [2], [3]]
    pairs = klgnn.tuples(4, 2, 12, 0)
    assert sorted(map(tuple, pairs.tolist())) == [
        (u, v) for u in range(4) for v in range(4) if u != v
    ]
    sample = klgnn.tuples(6, 2, 7, 3)
    assert len(sample) == len({tuple(t) for t in sample.tolist()}) == 7
    assert np.all(sample[:, 0] != sample[:, 1])
    bag = klgnn.tuple_bag(np.array([0, 1]), np.array([1, 0]), 3, 2, 100, 0)
    assert len(bag.node) == 6 * 3 and len(bag.senders) == 6 * 2
    assert np.all(np.bincount(bag.mark) == [6, 6, 6])  # one node marked 1 and one 2 per copy


def pairs():
    c6, two_c3 = nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    decalin = nx.cycle_graph(6)
    decalin.add_edges_from([(5, 6), (6, 7), (7, 8), (8, 9), (9, 0)])
    bicyclopentyl = nx.disjoint_union(nx.cycle_graph(5), nx.cycle_graph(5))
    bicyclopentyl.add_edge(0, 5)
    return [c6, two_c3, decalin, bicyclopentyl]


def test_separates_wl_equivalent_pairs_and_is_invariant():
    """One batch: C6, 2×C3, decalin, bicyclopentyl, CSL(41, 2), CSL(41, 3), then relabelled
    copies. k = 1 enumerates every tuple (41 <= num_tuples); k = 2 enumerates the small graphs'
    pairs and samples 100 of CSL's 1640 (so CSL is not checked for its invariance)."""
    rng = np.random.default_rng(0)
    graphs = []
    for g in pairs():
        e = np.array(g.edges())
        graphs.append((e[:, 0], e[:, 1], g.number_of_nodes()))
    graphs += [synthetic_wl.csl_edges(41, 2) + (41,), synthetic_wl.csl_edges(41, 3) + (41,)]
    graphs += [(p[s], p[r], n) for s, r, n in graphs for p in [rng.permutation(n)]]
    gts = [synthetic_wl.to_graphs_tuple(*g) for g in graphs]
    n, m = sum(g[2] for g in graphs), sum(int(t.n_edge[0]) for t in gts)
    host = padding.batch(gts, padding.Budget(n + 1, m, len(gts) + 1))
    kw = dict(hidden=16, num_classes=2, num_layers=3, num_tuples=100)
    models = [klgnn.KLGNN(k=1, **kw), klgnn.KLGNN(k=2, **kw)]
    models.append(gin.GraphClassifier(hidden=8, num_classes=2, num_layers=3))
    batches = [padding.to_device(m.prepare_graph(host)) for m in models[:2]]
    batches.append(padding.to_device(host))
    params = [random_params(m, g) for m, g in zip(models, batches)]

    @jax.jit
    def run(params, graphs):
        return [m.apply(v, g, g.nodes) for m, v, g in zip(models, params, graphs)]

    k1, k2, out_gin = (np.asarray(o) for o in run(params, batches))
    dist = lambda o, i, j: float(np.linalg.norm(o[i] - o[j]))  # noqa: E731
    for i, j in ((0, 1), (2, 3), (4, 5)):
        assert dist(out_gin, i, j) < 1e-5  # 1-WL-equivalent: GIN cannot tell them apart
        assert dist(k1, i, j) > 1e-3 and dist(k2, i, j) > 1e-3
    np.testing.assert_allclose(k1[6:12], k1[:6], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(k2[6:10], k2[:4], rtol=1e-4, atol=1e-5)

"""SPEN: ego-nets equal networkx's ego graphs (hop marks = distances; hops >= diameter gives the
whole graph in every one); SPEN separates two CSL graphs and C6 vs 2×C3 that GIN maps to equal
outputs; node embeddings are permutation equivariant (graph outputs invariant)."""

import jax
import networkx as nx
import numpy as np
import pytest

from netlab.graph import gin, padding, spen, synthetic_wl
from netlab.graph import graphs as G
from netlab.graph.padding import GraphBudgetError
from tests.graph.host_params import random_params


def test_ego_nets_match_networkx():
    g = nx.gnp_random_graph(12, 0.25, seed=2)
    e = np.array(g.edges())
    s, r = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    bag = spen.ego_bag(s, r, 12, 2)
    for v in range(12):
        ego = nx.ego_graph(g, v, radius=2)
        rows = bag.sub == v
        assert sorted(bag.node[rows].tolist()) == sorted(ego)
        dist = nx.single_source_shortest_path_length(g, v)
        assert all(bag.mark[rows][i] == dist[u] for i, u in enumerate(bag.node[rows]))
        copy_edges = {
            (bag.node[a], bag.node[b])
            for a, b in zip(bag.senders, bag.receivers)
            if bag.sub[a] == v
        }
        assert copy_edges == {(a, b) for a, b in zip(s, r) if a in ego and b in ego}
    c = nx.cycle_graph(7)
    e = np.array(c.edges())
    whole = spen.ego_bag(np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]], 7, 3)  # diameter 3
    assert len(whole.node) == 49 and len(whole.senders) == 7 * 14
    batch = padding.batch([synthetic_wl.to_graphs_tuple(s, r, 12)], padding.Budget(13, 64, 2))
    with pytest.raises(GraphBudgetError, match="model.copy_factor"):
        spen.SPEN(hops=2, copy_factor=1).prepare_graph(batch)


def test_separates_csl_and_cycles_gin_does_not_and_is_equivariant():
    rng = np.random.default_rng(0)
    c6, c3 = nx.cycle_graph(6), nx.cycle_graph(3)
    two_c3 = nx.disjoint_union(c3, c3)
    graphs = [synthetic_wl.csl_edges(41, 2) + (41,), synthetic_wl.csl_edges(41, 3) + (41,)]
    graphs += [(np.array(h.edges())[:, 0], np.array(h.edges())[:, 1], 6) for h in (c6, two_c3)]
    perms = [rng.permutation(n) for _, _, n in graphs]
    graphs += [(p[s], p[r], n) for (s, r, n), p in zip(graphs, perms)]
    gts = [synthetic_wl.to_graphs_tuple(*g) for g in graphs]
    m_total = sum(int(t.n_edge[0]) for t in gts)
    host = padding.batch(gts, padding.Budget(96 * 2 + 1, m_total, len(gts) + 1))
    model = spen.SPEN(hidden=8, num_classes=2, hops=1, num_layers=2)
    gin_model = gin.GraphClassifier(hidden=8, num_classes=2, num_layers=3)
    g = padding.to_device(model.prepare_graph(host))

    v, w = random_params(model, g, nodes=True), random_params(gin_model, g)

    @jax.jit
    def run(v, w, g):
        z = model.apply(v, g, g.nodes, nodes=True)
        out = G.pool(g, z, "sum")  # the graph embedding the head reads
        return out, z, gin_model.apply(w, g, g.nodes)

    out, z, out_gin = (np.asarray(o) for o in run(v, w, g))
    dist = lambda o, i, j: float(np.linalg.norm(o[i] - o[j]))  # noqa: E731
    assert dist(out_gin, 0, 1) < 1e-5 and dist(out_gin, 2, 3) < 1e-5
    assert dist(out, 0, 1) > 1e-3 and dist(out, 2, 3) > 1e-3
    np.testing.assert_allclose(out[4:8], out[:4], rtol=1e-4, atol=1e-5)
    starts = np.r_[0, np.cumsum([n for _, _, n in graphs])]
    for i, p in enumerate(perms):  # node v of graph i is node p[v] of its relabelled copy
        a, b = z[starts[i] : starts[i + 1]], z[starts[i + 4] : starts[i + 5]]
        np.testing.assert_allclose(b[p], a, rtol=1e-4, atol=1e-4)

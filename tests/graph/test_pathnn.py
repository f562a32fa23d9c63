"""PathNN: path sets equal networkx's enumerations (all simple paths, all shortest paths, one
shortest path per pair); the AP variant separates the 1-WL-equivalent pair C6 vs 2×C3 that GIN
maps to equal outputs (and its path sets tell decalin from bicyclopentyl); AP outputs are
invariant to node relabelling and the AP / SP+ path sets equivariant; the path budget error names
its setting."""

import flax.linen as nn
import jax
import networkx as nx
import numpy as np
import pytest

from netlab.graph import gin, padding, pathnn, synthetic_wl, wl
from netlab.graph.padding import GraphBudgetError


def nx_graph():
    g = nx.gnp_random_graph(9, 0.35, seed=3)
    g.add_edges_from([(9, 10), (10, 11), (11, 9)])  # a second component with a triangle
    return g


def test_path_sets_match_networkx():
    g = nx_graph()
    e = np.array(g.edges())
    n, cutoff = g.number_of_nodes(), 4
    pairs = [(u, v) for u in g for v in g if u != v]
    ap = pathnn.enumerate_paths(e[:, 0], e[:, 1], n, cutoff, "ap")
    want = {tuple(p) for u, v in pairs for p in nx.all_simple_paths(g, u, v, cutoff=cutoff - 1)}
    got = [tuple(p) for k in ap for p in ap[k].tolist()]
    assert len(got) == len(set(got)) and set(got) == want
    spp = pathnn.enumerate_paths(e[:, 0], e[:, 1], n, cutoff, "sp+")
    want = {
        tuple(p)
        for u, v in pairs
        if nx.has_path(g, u, v)
        for p in nx.all_shortest_paths(g, u, v)
        if len(p) <= cutoff
    }
    got = [tuple(p) for k in spp for p in spp[k].tolist()]
    assert len(got) == len(set(got)) and set(got) == want
    sp = pathnn.enumerate_paths(e[:, 0], e[:, 1], n, cutoff, "sp")
    dist = dict(nx.all_pairs_shortest_path_length(g, cutoff=cutoff - 1))
    got = {(p[0], p[-1]): p for k in sp for p in sp[k].tolist()}
    assert sum(len(v) for v in sp.values()) == len(got)  # one path per ordered pair
    assert set(got) == {(u, v) for u in dist for v in dist[u] if v != u}
    for (u, v), p in got.items():
        assert len(p) - 1 == dist[u][v] and got[(v, u)] == p[::-1]
        assert all(g.has_edge(a, b) for a, b in zip(p, p[1:]))
    with pytest.raises(GraphBudgetError, match="model.max_paths"):
        pathnn.PathNN(cutoff=4, max_paths=5).prepare_graph(padding.from_edges(e[:, 0], e[:, 1], n))


def pair_graphs():
    c6 = nx.cycle_graph(6)
    two_c3 = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    decalin = nx.cycle_graph(6)
    decalin.add_edges_from([(5, 6), (6, 7), (7, 8), (8, 9), (9, 0)])
    bicyclopentyl = nx.disjoint_union(nx.cycle_graph(5), nx.cycle_graph(5))
    bicyclopentyl.add_edge(0, 5)
    return [c6, two_c3, decalin, bicyclopentyl]


def batched(graphs, seed=0):
    """The graphs and relabelled copies, one padded batch (constant features)."""
    rng = np.random.default_rng(seed)
    gts = []
    for g in graphs + graphs:
        e = np.array(g.edges())
        perm = rng.permutation(g.number_of_nodes()) if len(gts) >= len(graphs) else None
        e = e if perm is None else perm[e]
        gts.append(synthetic_wl.to_graphs_tuple(e[:, 0], e[:, 1], g.number_of_nodes()))
    n = sum(int(t.n_node[0]) for t in gts)
    m = sum(int(t.n_edge[0]) for t in gts)
    return padding.batch(gts, padding.Budget(n + 1, padding.round_up(m, 8), len(gts) + 1)), gts


def test_ap_separates_wl_equivalent_pairs_gin_does_not_and_invariance():
    graphs = pair_graphs()
    host, gts = batched(graphs)
    classes = wl.graph_classes(gts[:4])
    assert classes[0] == classes[1] and classes[2] == classes[3]  # 1-WL cannot tell them apart
    ap = pathnn.PathNN(hidden=8, num_classes=4, cutoff=4, variant="ap")
    gin_model = gin.GraphClassifier(hidden=8, num_classes=4, num_layers=3)
    g_ap = padding.to_device(ap.prepare_graph(host))

    @jax.jit
    def run(g):
        key = jax.random.key(0)
        v = nn.unbox(ap.init(key, g, g.nodes))
        out = pathnn.graph_readout(g, ap.apply(v, g, g.nodes))
        v = nn.unbox(gin_model.init(key, g, g.nodes))
        return out, gin_model.apply(v, g, g.nodes)

    out_ap, out_gin = (np.asarray(o)[:8] for o in run(g_ap))
    dist = lambda o, i, j: float(np.linalg.norm(o[i] - o[j]))  # noqa: E731
    assert dist(out_ap, 0, 1) > 1e-2  # C6 vs 2×C3 differ in simple paths of 3 edges
    assert dist(out_gin, 0, 1) < 1e-5 and dist(out_gin, 2, 3) < 1e-5
    np.testing.assert_allclose(out_ap[4:], out_ap[:4], rtol=1e-5, atol=1e-5)  # relabelled copies


@pytest.mark.parametrize("variant", ["ap", "sp+"])
def test_path_sets_are_equivariant(variant):
    """(And decalin vs bicyclopentyl: per-node simple-path counts agree up to 4 edges and differ
    at 5, so AP with cutoff 6 separates them.)"""
    g = nx_graph()
    e, n = np.array(g.edges()), g.number_of_nodes()
    perm = np.random.default_rng(1).permutation(n)
    a = pathnn.enumerate_paths(e[:, 0], e[:, 1], n, 4, variant)
    b = pathnn.enumerate_paths(perm[e[:, 0]], perm[e[:, 1]], n, 4, variant)
    for k in a:
        assert sorted(map(tuple, perm[a[k]].tolist())) == sorted(map(tuple, b[k].tolist()))
    if variant == "ap":
        hists = []
        for h in pair_graphs()[2:]:
            e = np.array(h.edges())
            p = pathnn.enumerate_paths(e[:, 0], e[:, 1], 10, 6, "ap")
            hists.append([sorted(np.bincount(p[k][:, 0], minlength=10)) for k in range(1, 6)])
        assert hists[0][:4] == hists[1][:4] and hists[0][4] != hists[1][4]

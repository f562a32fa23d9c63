"""Natural Graph Networks: edge (and node) neighbourhood classes are natural -- equal for every
pair of edges whose role-marked neighbourhoods are isomorphic, carried along by a relabelling --
and tell cycle edges from chords in a CSL graph; the NGN's node embeddings are permutation
equivariant, its graph outputs invariant, and it separates two CSL graphs that GIN does not."""

import itertools

import jax
import networkx as nx
import numpy as np

from netlab.graph import gin, ngn, padding, synthetic_wl
from netlab.graph import graphs as G
from tests.graph.host_params import random_params


def both(s, r):
    return np.r_[s, r], np.r_[r, s]


def neighbourhood(g, w, v):
    sub = nx.Graph(g.subgraph({v, w} | set(g[v]) | set(g[w])))
    nx.set_node_attributes(sub, "o", "role")
    sub.nodes[v]["role"], sub.nodes[w]["role"] = "r", "s"
    return sub


def test_classes_are_natural():
    big = 1 << 30  # no residue collisions: classes = WL hashes
    s, r = both(*synthetic_wl.csl_edges(13, 3))
    edge, node = ngn.neighbourhood_classes(s, r, 13, big)
    assert len(set(node.tolist())) == 1  # vertex-transitive
    cycle = np.isin(np.abs(s - r), (1, 12))  # the cycle edges; chords have |i - j| = 3 or 10
    assert len(set(edge[cycle].tolist())) == 1 and len(set(edge[~cycle].tolist())) == 1
    assert edge[cycle][0] != edge[~cycle][0]
    g = nx.gnp_random_graph(9, 0.35, seed=4)
    s, r = both(*np.array(g.edges()).T)
    edge, _ = ngn.neighbourhood_classes(s, r, 9, big)
    match = lambda a, b: a["role"] == b["role"]  # noqa: E731
    for i, j in itertools.combinations(range(len(s)), 2):
        if nx.is_isomorphic(
            neighbourhood(g, s[i], r[i]), neighbourhood(g, s[j], r[j]), node_match=match
        ):
            assert edge[i] == edge[j]
    p = np.random.default_rng(0).permutation(9)
    edge_p, _ = ngn.neighbourhood_classes(p[s], p[r], 9, big)
    np.testing.assert_array_equal(edge_p, edge)


def test_separates_csl_pair_gin_does_not_and_is_equivariant():
    rng = np.random.default_rng(1)
    graphs = [synthetic_wl.csl_edges(41, 2), synthetic_wl.csl_edges(41, 3)]
    perms = [rng.permutation(41) for _ in graphs]
    graphs += [(p[s], p[r]) for (s, r), p in zip(graphs, perms)]
    gts = [synthetic_wl.to_graphs_tuple(s, r, 41) for s, r in graphs]
    host = padding.batch(gts, padding.Budget(4 * 41 + 1, 4 * 164, 5))
    model = ngn.NGN(hidden=8, num_classes=2, num_layers=2, num_kernels=8)
    gin_model = gin.GraphClassifier(hidden=8, num_classes=2, num_layers=3)
    g = padding.to_device(model.prepare_graph(host))

    v, w = random_params(model, g, nodes=True), random_params(gin_model, g)

    @jax.jit
    def run(v, w, g):
        z = model.apply(v, g, g.nodes, nodes=True)
        out = G.pool(g, z, "sum")  # the graph embedding the head reads
        return out, z, gin_model.apply(w, g, g.nodes)

    out, z, out_gin = (np.asarray(o) for o in run(v, w, g))
    assert np.linalg.norm(out_gin[0] - out_gin[1]) < 1e-5
    assert np.linalg.norm(out[0] - out[1]) > 1e-3
    np.testing.assert_allclose(out[2:4], out[:2], rtol=1e-4, atol=1e-5)
    for i, p in enumerate(perms):
        a, b = z[41 * i : 41 * (i + 1)], z[41 * (i + 2) : 41 * (i + 3)]
        np.testing.assert_allclose(b[p], a, rtol=1e-4, atol=1e-5)

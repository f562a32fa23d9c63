"""SPECTRE-style planar / SBM sets: determinism, structure and the DiGress 128/32/40 split."""

import networkx as nx
import numpy as np

from netlab.graph import spectre_data as S


def test_planar_graphs_are_planar_connected_triangulations():
    graphs = S.generate("planar", 4, seed=3)
    for g in graphs:
        assert g.number_of_nodes() == 64 and nx.is_connected(g) and nx.check_planarity(g)[0]
        # a triangulation of n points has at most 3n - 6 edges and at least 2n - 3
        assert 2 * 64 - 3 <= g.number_of_edges() <= 3 * 64 - 6
    again = S.generate("planar", 4, seed=3)
    assert all(nx.utils.graphs_equal(a, b) for a, b in zip(graphs, again))


def test_sbm_sizes_and_split_and_dense_round_trip():
    graphs = S.generate("sbm", 3, seed=1)
    for g in graphs:
        assert 40 <= g.number_of_nodes() <= 200
    train, val, test = S.split(list(range(200)), seed=0)
    assert (len(train), len(val), len(test)) == (128, 32, 40)
    assert sorted(train + val + test) == list(range(200))
    adj, mask = S.to_dense(graphs)
    assert adj.shape[1] == max(g.number_of_nodes() for g in graphs)
    np.testing.assert_array_equal(adj, adj.transpose(0, 2, 1))
    back = S.from_dense(adj, mask)
    assert all(set(a.edges) == set(b.edges) for a, b in zip(graphs, back))

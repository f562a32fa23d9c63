"""CSL and EXP-style pairs are 1-WL-indistinguishable (wl.py) yet non-isomorphic (networkx); the
1-WL accuracy bound is 0.1 on CSL and 0.5 on EXP-style pairs."""

import networkx as nx
import numpy as np

from netlab.graph import synthetic_wl, wl


def to_nx(gt):
    g = nx.Graph()
    g.add_nodes_from(range(int(gt.n_node[0])))
    g.add_edges_from(zip(gt.senders.tolist(), gt.receivers.tolist()))
    return g


def test_csl_one_wl_class_non_isomorphic_and_bound():
    data = synthetic_wl.csl(copies=2)
    graphs, labels = [g for g, _ in data], np.array([y for _, y in data])
    assert all(np.all(np.bincount(g.receivers) == 4) for g in graphs)  # 4-regular
    classes = wl.graph_classes(graphs)
    assert len(set(classes)) == 1
    assert wl.accuracy_bound(classes, labels) == 0.1
    a, a2, b = to_nx(graphs[0]), to_nx(graphs[1]), to_nx(graphs[2])  # s=2, s=2 copy, s=3
    assert nx.is_isomorphic(a, a2) and not nx.is_isomorphic(a, b)


def test_exp_pairs_wl_equivalent_non_isomorphic_bound_half():
    data = synthetic_wl.exp_pairs(6, seed=0)
    graphs, labels = [g for g, _ in data], np.array([y for _, y in data])
    classes = wl.graph_classes(graphs)
    for i in range(0, len(data), 2):
        assert labels[i] == 1 and labels[i + 1] == 0
        assert classes[i] == classes[i + 1]
        assert not nx.is_isomorphic(to_nx(graphs[i]), to_nx(graphs[i + 1]))
    assert wl.accuracy_bound(classes, labels) == 0.5

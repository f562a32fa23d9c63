"""1-WL colour refinement against networkx's Weisfeiler-Lehman graph hash; the accuracy bound on a
hand-checked graph; padded graphs ignore their padding."""

import jraph
import networkx as nx
import numpy as np
import pytest

from netlab.graph import padding, wl


def to_jraph(g: nx.Graph) -> jraph.GraphsTuple:
    e = np.array(list(g.edges()), np.int32).reshape(-1, 2)
    s, r = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    return jraph.GraphsTuple(
        nodes=None,
        edges=None,
        senders=s,
        receivers=r,
        globals=None,
        n_node=np.array([g.number_of_nodes()]),
        n_edge=np.array([len(s)]),
    )


def same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a[:, None] == a[None], b[:, None] == b[None])


@pytest.mark.filterwarnings("ignore:The hashes produced:UserWarning")
def test_graph_classes_match_networkx_wl_hash_on_random_graphs():
    rng = np.random.default_rng(0)
    graphs = [
        nx.gnp_random_graph(int(rng.integers(4, 8)), 0.45, seed=int(rng.integers(1 << 30)))
        for _ in range(80)
    ]
    # Two triangles vs a hexagon, decalin vs bicyclopentyl: 1-WL-equivalent, non-isomorphic.
    decalin = nx.cycle_graph(10)
    decalin.add_edge(0, 5)
    bicyclopentyl = nx.disjoint_union(nx.cycle_graph(5), nx.cycle_graph(5))
    bicyclopentyl.add_edge(0, 5)
    graphs += [nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))]
    graphs += [decalin, bicyclopentyl]
    ours = wl.graph_classes([to_jraph(g) for g in graphs])
    theirs = [nx.weisfeiler_lehman_graph_hash(g, iterations=12) for g in graphs]
    assert same_partition(ours, theirs)
    assert ours[-4] == ours[-3] and ours[-2] == ours[-1]
    assert 10 < len(set(ours)) < len(graphs)  # a non-trivial partition


def test_node_labels_enter_the_initial_colours_as_in_networkx():
    rng = np.random.default_rng(1)
    graphs, feats, hashes = [], [], []
    for i in range(30):
        g = nx.gnp_random_graph(6, 0.4, seed=i)
        lab = rng.integers(0, 2, 6)
        nx.set_node_attributes(g, {v: str(lab[v]) for v in g}, "x")
        graphs.append(to_jraph(g))
        feats.append(lab[:, None])
        hashes.append(nx.weisfeiler_lehman_graph_hash(g, node_attr="x", iterations=12))
    assert same_partition(wl.graph_classes(graphs, feats), hashes)


def test_node_bound_by_hand_and_padding_ignored():
    # Path 0-1-2-3-4: stable colours {0,4} ends, {1,3}, {2} centre.
    s = np.array([0, 1, 1, 2, 2, 3, 3, 4])
    r = np.array([1, 0, 2, 1, 3, 2, 4, 3])
    c = wl.refine(s, r, 5)
    assert same_partition(c, [0, 1, 2, 1, 0])
    y = np.array([0, 1, 1, 0, 1])
    # classes {0,4}: labels (0,1) -> 1; {1,3}: (1,0) -> 1; {2}: 1 -> 1  => 3/5
    assert wl.accuracy_bound(c, y) == 3 / 5
    assert wl.accuracy_bound(c, y, np.array([1, 1, 0, 0, 0], bool)) == 1.0
    g = padding.from_edges(s, r, 5, budget=padding.Budget(9, 16, 2))
    cp = wl.colors(g)
    assert np.all(cp[5:] == -1) and np.array_equal(cp[:5], c)

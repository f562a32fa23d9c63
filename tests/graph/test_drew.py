"""DRew: hop lists equal networkx shortest-path distances; depth 1 (and K = 1) is the residual GCN
it rewires; receptive field SPD <= L with nu = 1 and <= L(L+1)/2 with nu = inf; weight blocks
Σ_t min(t+1, K); permutation equivariance; the hop budget error names its setting."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from netlab.graph import drew, gcn, oversquashing, padding
from netlab.graph.padding import GraphBudgetError


def nx_graph(seed=0):
    g = nx.gnp_random_graph(14, 0.15, seed=seed)
    g.add_edges_from([(20, 21), (21, 22)])  # a second component
    return nx.convert_node_labels_to_integers(g)


def host_graph(g, perm=None, feat=3):
    n = g.number_of_nodes()
    e = np.array(g.edges()).reshape(-1, 2)
    x = np.random.default_rng(0).normal(size=(n, feat)).astype(np.float32)
    if perm is not None:
        e, x = perm[e], x[np.argsort(perm)]
    return padding.from_edges(e[:, 0], e[:, 1], n, nodes=x, symmetrize=True)


def test_hop_lists_match_networkx_shortest_paths():
    g = nx_graph()
    hg = host_graph(g)
    m = hg.edge_mask
    hops = drew.hop_lists(hg.senders[m], hg.receivers[m], g.number_of_nodes(), 4)
    spl = dict(nx.all_pairs_shortest_path_length(g, cutoff=4))
    for k in range(1, 5):
        want = sorted((j, i) for i in spl for j, d in spl[i].items() if d == k)
        s, r = hops[k]
        assert sorted(zip(s.tolist(), r.tolist())) == want
        assert np.all(np.diff(r) >= 0)  # sorted by receiver


def test_depth_one_is_base_mpnn_receptive_field_and_equivariance():
    g = nx_graph(1)
    perm = np.random.default_rng(2).permutation(g.number_of_nodes())
    path = padding.from_edges(
        np.arange(7), np.arange(1, 8), 8, nodes=np.ones((8, 3), np.float32), symmetrize=True
    )
    m1 = drew.DRew(hidden=8, num_classes=2, num_layers=1)
    m2 = drew.DRew(hidden=8, num_classes=2, num_layers=2, nu=1)
    m2inf = drew.DRew(hidden=8, num_classes=2, num_layers=2, nu=-1)
    dev = lambda m, h: padding.to_device(m.prepare_graph(h))  # noqa: E731
    g1, g2, g2p = dev(m1, host_graph(g)), dev(m2, host_graph(g)), dev(m2, host_graph(g, perm))
    p2, p2inf = dev(m2, path), dev(m2inf, path)

    @jax.jit
    def run(g1, g2, g2p, p2, p2inf):
        key = jax.random.key(0)
        v1 = nn.unbox(m1.init(key, g1, g1.nodes))["params"]
        q = v1  # the base MPNN: encoder -> h + ReLU(GCNConv(h)) -> head, same parameters
        h = g1.nodes @ q["encoder"]["kernel"] + q["encoder"]["bias"]
        conv = gcn.GCNConv(8).apply({"params": q["conv0_hop1"]}, g1, h)
        base = (h + nn.relu(conv)) @ q["head"]["kernel"] + q["head"]["bias"]
        v2 = nn.unbox(m2.init(key, g2, g2.nodes))  # hop lists have equal padded sizes on all
        ev = lambda gg: m2.apply(v2, gg, gg.nodes)  # noqa: E731
        sens = []
        for m, pg in ((m2, p2), (m2inf, p2inf)):
            fn = lambda z: m.apply(v2, pg, z)  # noqa: E731
            sens.append(oversquashing.sensitivity(fn, pg.nodes, jnp.array([0])))
        return m1.apply({"params": v1}, g1, g1.nodes), base, ev(g2), ev(g2p), sens

    out1, base, a, b, (s1, sinf) = jax.tree.map(np.asarray, run(g1, g2, g2p, p2, p2inf))
    np.testing.assert_allclose(out1, base, rtol=1e-6, atol=1e-6)
    n = g.number_of_nodes()
    np.testing.assert_allclose(b[:n][perm], a[:n], rtol=1e-5, atol=1e-5)
    # Path 0-1-...-7, target node 0, L = 2: nu = 1 reaches SPD <= 2, nu = inf SPD <= 3.
    assert np.all(s1[0, :3] > 0) and np.all(s1[0, 3:] == 0)
    assert np.all(sinf[0, :4] > 0) and np.all(sinf[0, 4:] == 0)


def test_weight_blocks_and_hop_budget_error():
    m = drew.DRew(hidden=4, num_classes=2, num_layers=4, max_hops=2)
    hg = m.prepare_graph(host_graph(nx_graph()))
    shapes = jax.eval_shape(m.init, jax.random.key(0), hg, hg.nodes)["params"]
    convs = [k for k in shapes if k.startswith("conv")]
    assert len(convs) == sum(min(t + 1, 2) for t in range(4))
    with pytest.raises(GraphBudgetError, match="model.max_hop_edges"):
        drew.DRew(num_layers=3, max_hop_edges=2).prepare_graph(host_graph(nx_graph()))

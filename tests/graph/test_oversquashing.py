"""Over-squashing diagnostics: commute times against closed forms and networkx's resistance
distance; the Jacobian sensitivity of a linear GCN stack equals |(Â^L)_vu| · Σ|W1 W2|."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from netlab.graph import gcn, oversquashing, padding


def test_commute_time_path_ends_and_networkx_resistance():
    n = 7  # path: m = n - 1 edges, R(ends) = n - 1, commute time 2 m (n - 1)
    s = np.arange(n - 1)
    tau = oversquashing.commute_times(np.r_[s, s + 1], np.r_[s + 1, s], n)
    np.testing.assert_allclose(tau[0, n - 1], 2 * (n - 1) * (n - 1), rtol=1e-9)
    np.testing.assert_allclose(tau, tau.T, atol=1e-9)
    g = nx.connected_watts_strogatz_graph(9, 4, 0.3, seed=0)
    g.add_edges_from([(20, 21)])  # a second component: inf across components
    g = nx.convert_node_labels_to_integers(g)
    e = np.array(g.edges())
    tau = oversquashing.commute_times(e[:, 0], e[:, 1], g.number_of_nodes())
    h = g.subgraph(range(9))
    m = h.number_of_edges()
    for u, v in [(0, 4), (2, 7), (1, 8)]:
        np.testing.assert_allclose(tau[u, v], 2 * m * nx.resistance_distance(h, u, v), rtol=1e-6)
    np.testing.assert_allclose(tau[9, 10], 2 * 1 * 1.0, rtol=1e-9)
    assert np.isinf(tau[0, 10])


def test_linear_gcn_sensitivity_is_adjacency_power_times_weight_norm():
    rng = np.random.default_rng(0)
    n, f = 8, 3
    g = padding.from_edges(rng.integers(0, n, 14), rng.integers(0, n, 14), n, symmetrize=True)
    x = rng.normal(size=(g.num_nodes, f)).astype(np.float32)
    gd = padding.to_device(g)
    c1, c2 = gcn.GCNConv(4, use_bias=False), gcn.GCNConv(2, use_bias=False)
    p1 = nn.unbox(jax.jit(c1.init)(jax.random.key(0), gd, jnp.asarray(x)))
    p2 = nn.unbox(jax.jit(c2.init)(jax.random.key(1), gd, jnp.zeros((g.num_nodes, 4))))
    fn = lambda z: c2.apply(p2, gd, c1.apply(p1, gd, z))  # noqa: E731
    targets = np.array([0, 3, 5])
    sens = np.asarray(jax.jit(lambda z: oversquashing.sensitivity(fn, z, targets))(x))
    m = g.edge_mask
    a = padding.dense_gcn_matrix(g.senders[m], g.receivers[m], g.edge_weight[m], g.num_nodes)
    w = np.asarray(p1["params"]["lin"]["kernel"]) @ np.asarray(p2["params"]["lin"]["kernel"])
    expect = np.abs((a @ a)[targets]) * np.abs(w).sum()
    np.testing.assert_allclose(sens, expect, rtol=1e-4, atol=1e-6)


def test_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    sens, tau = rng.random((2, 5)), rng.random((2, 5)) * 10
    path = oversquashing.plot(sens, tau, str(tmp_path / "s.png"), targets=[0, 1])
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

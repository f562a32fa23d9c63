"""LASER rewiring: each node adds exactly its budget min(|O|, max(min_add, round(ρ|O|))) of orbit
members, all at shortest-path distance r (networkx), the least connected ones by μ = (A + I)^8;
snapshots are symmetric and disjoint from the graph and each other; ρ = 0 adds nothing, ρ = 1 the
whole orbit; the model (ρ = 1: no random ties) is permutation equivariant; the edge budget error
names its setting."""

import flax.linen as nn
import jax
import networkx as nx
import numpy as np
import pytest

from netlab.graph import laser, padding
from netlab.graph.padding import GraphBudgetError


def graph_edges(seed=0, n=20):
    g = nx.gnp_random_graph(n, 0.15, seed=seed)
    e = np.array(g.edges())
    return g, np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])


def test_rewiring_budget_orbits_and_lowest_connectivity():
    g, s, r = graph_edges()
    n = g.number_of_nodes()
    spd = dict(nx.all_pairs_shortest_path_length(g))
    mu = laser.connectivity(s, r, n)
    np.testing.assert_allclose(mu, np.linalg.matrix_power(nx.to_numpy_array(g) + np.eye(n), 8))
    sel = laser.laser_selection(s, r, n, max_hop=3, rho=0.5, min_add=1, seed=0)
    seen = {tuple(sorted(e)) for e in g.edges()}
    for k, pairs in sel.items():
        for i in range(n):
            orbit = [j for j, d in spd[i].items() if d == k]
            chosen = pairs[pairs[:, 0] == i, 1]
            assert len(chosen) == laser.orbit_budget(len(orbit), 0.5, 1)
            assert set(chosen.tolist()) <= set(orbit)
            rest = sorted(set(orbit) - set(chosen.tolist()))
            if len(chosen) and rest:
                assert mu[i, chosen].max() <= mu[i, rest].min()
        hs, hr = laser.snapshot_edges(pairs)
        und = {tuple(sorted(p)) for p in zip(hs.tolist(), hr.tolist())}
        assert {(a, b) for a, b in zip(hs.tolist(), hr.tolist())} == {
            (b, a) for a, b in zip(hs.tolist(), hr.tolist())
        }  # symmetric
        assert len(und) <= len(pairs) and not und & seen  # within budget, new edges only
        seen |= und
    assert all(len(p) == 0 for p in laser.laser_selection(s, r, n, 3, 0.0, 0).values())
    full = laser.laser_selection(s, r, n, 3, 1.0, 0)
    assert all(len(p) == sum(d == k for i in spd for d in spd[i].values()) for k, p in full.items())


def test_model_equivariance_and_budget_error():
    g, s, r = graph_edges(1, n=16)
    n = g.number_of_nodes()
    perm = np.random.default_rng(3).permutation(n)
    x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    m = laser.LASER(hidden=4, num_classes=3, num_layers=1, max_hop=3, rho=1.0, min_add=0)
    host = lambda s, r, x: m.prepare_graph(  # noqa: E731
        padding.from_edges(s, r, n, nodes=x, symmetrize=True)
    )
    g0, g1 = host(s, r, x), host(perm[s], perm[r], x[np.argsort(perm)])
    both = jax.tree.map(lambda a, b: np.stack([a, b]), g0, g1)  # equal padded shapes

    @jax.jit
    def run(gs):
        g = jax.tree.map(lambda a: a[0], gs)
        v = nn.unbox(m.init(jax.random.key(0), g, g.nodes))
        return jax.vmap(lambda g: m.apply(v, g, g.nodes))(gs)

    a, b = np.asarray(run(both))
    np.testing.assert_allclose(b[:n][perm], a[:n], rtol=1e-5, atol=1e-5)
    with pytest.raises(GraphBudgetError, match="model.max_added_edges"):
        laser.LASER(max_added_edges=2).prepare_graph(padding.from_edges(s, r, n))

"""DCM: the inferred complex's boundary matrices satisfy B1 B2 = 0 and its cells are exactly the
short cycles (networkx), the model is permutation-equivariant (the complex rebuilt for the
relabelled graph: other edge orientations, cycle order and starting points), and more cycles than
model.max_cells is a one-line error naming that knob; the numpy cycle enumerator equals networkx
on random graphs; the edge branch averages (its output does not grow with the degree)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.graph import dcm, padding

N, F = 8, 3


def small_graph(rng):
    g = nx.cycle_graph(N)
    g.add_edges_from([(0, 2), (2, 5), (3, 7), (1, 6)])
    e = np.asarray(g.edges())
    return e[:, 0], e[:, 1], rng.normal(size=(N, F)).astype(np.float32)


def test_boundaries_compose_to_zero_and_cells_are_short_cycles():
    s, r, _ = small_graph(np.random.default_rng(0))
    edges, ce, cs, k = dcm.cell_complex(s, r, N, 5, 64)
    b1, b2 = dcm.boundary_matrices(edges, ce[:k], cs[:k], N)
    np.testing.assert_array_equal(b1 @ b2, 0.0)
    assert np.all(np.abs(b2).sum(0) == (cs[:k] != 0).sum(1))  # each cell edge counted once
    g = nx.Graph(list(zip(s, r)))
    want = sorted(sorted(c) for c in nx.simple_cycles(g, length_bound=5) if len(c) >= 3)
    got = sorted(sorted({int(v) for e in ce[c][cs[c] != 0] for v in edges[e]}) for c in range(k))
    assert got == want and k > 3
    with pytest.raises(UserError, match=r"model\.max_cells=2; raise model\.max_cells"):
        dcm.cell_complex(s, r, N, 5, 2)


def test_dcm_is_permutation_equivariant():
    rng = np.random.default_rng(1)
    s, r, x = small_graph(rng)
    perm = rng.permutation(N)  # node i becomes perm[i]
    model = dcm.DCM(hidden=4, num_classes=2, num_layers=2, max_cycle_len=5, max_cells=64)
    gs = []
    for ss, rr, xx in ((s, r, x), (perm[s], perm[r], x[np.argsort(perm)])):
        hg = padding.from_edges(ss, rr, N, nodes=xx, symmetrize=True)
        gs.append(padding.to_device(model.prepare_graph(hg)))
    assert len(gs[0].norm["dcm_cell_edges"]) == 64

    @jax.jit
    def run(g0, g1):
        p = nn.unbox(model.init(jax.random.key(0), g0, g0.nodes))
        p["params"]["conv0"]["cell_score"]["kernel"] = (
            p["params"]["conv0"]["cell_score"]["kernel"] + 1.0
        )  # cells with non-trivial probabilities
        return model.apply(p, g0, g0.nodes), model.apply(p, g1, g1.nodes)

    out0, out1 = np.asarray(jax.device_get(run(*gs)))
    np.testing.assert_allclose(out1[perm], out0[:N], atol=1e-5)
    assert np.abs(out0[:N]).max() > 1e-3


def test_short_cycles_equal_networkx_canonicalised():
    """The numpy enumerator lists exactly networkx's simple cycles of 3..L nodes, each once, in
    canonical form (smallest node first, second node < last), on random graphs."""

    def canon(c):
        i = int(np.argmin(c))
        c = c[i:] + c[:i]
        return tuple(c if c[1] < c[-1] else [c[0]] + c[1:][::-1])

    for seed in range(4):
        g = nx.gnp_random_graph(13, 0.35, seed=seed)
        e = np.array(sorted(g.edges()))
        for length in (3, 4, 5):
            cycles = nx.simple_cycles(g, length_bound=length)
            want = sorted((canon(c) for c in cycles if len(c) >= 3), key=lambda c: (len(c), c))
            assert [tuple(c) for c in dcm.short_cycles(e, 13, length)] == want
    assert dcm.short_cycles(np.zeros((0, 2), int), 3, 4) == []


def test_edge_branch_is_a_mean_over_incident_edges_and_cells():
    """Regression (Cora at 41 %): the edge branch summed over a node's edges and an edge's
    neighbours, so hubs got messages ~degree times larger than the GCN term. With means (D^-1 |B1|,
    cell counts) the centre of a wheel with identical rim features gets the same output from the
    edge branch for 6 and 10 spokes; the raw sums do not (same parameters). And it is low-pass: a
    constant signal passes (signed cochains x_v − x_u, the other cause, mapped it to 0)."""
    budget = padding.Budget(12, 48, 2)

    def wheel(k, constant=False):  # centre 0, rim 1..k, isolated nodes up to 11 real nodes
        s = [0] * k + list(range(1, k + 1))
        r = list(range(1, k + 1)) + [i % k + 1 for i in range(1, k + 1)]
        x = np.zeros((11, F), np.float32)
        x[0], x[1 : k + 1] = [0.3, 0.8, -1.0] if constant else [1.0, -0.5, 0.2], [0.3, 0.8, -1.0]
        hg = padding.from_edges(s, r, 11, nodes=x, symmetrize=True, budget=budget)
        return padding.to_device(dcm.DCM(max_cycle_len=4, max_cells=32).prepare_graph(hg))

    graphs = [wheel(6), wheel(10), wheel(6, constant=True)]
    convs = [dcm.DCMConv(4, normalize=flag) for flag in (True, False)]

    @jax.jit
    def run(g0, g1, g2):
        p = nn.unbox(convs[0].init(jax.random.key(0), g0, g0.nodes))
        p["params"]["node"] = jax.tree.map(jnp.zeros_like, p["params"]["node"])  # edge branch only
        out = [[c.apply(p, g, g.nodes)[0] for g in (g0, g1)] for c in convs]
        return out, convs[0].apply(p, g2, g2.nodes)[:7]

    ((mean6, mean10), (sum6, sum10)), flat = jax.device_get(run(*graphs))
    assert (np.abs(np.asarray(flat)).max(1) > 1e-3).all()  # every wheel node gets a message
    np.testing.assert_allclose(mean6, mean10, atol=1e-6)
    assert np.abs(mean6).max() > 1e-3 and np.abs(sum10 - sum6).max() > 1e-2

"""DCM: the inferred complex's boundary matrices satisfy B1 B2 = 0 and its cells are exactly the
short cycles (networkx), the model is permutation-equivariant (the complex rebuilt for the
relabelled graph: other edge orientations, cycle order and starting points), and more cycles than
model.max_cells is a one-line error naming that knob; the numpy cycle enumerator equals networkx
on random graphs."""

import flax.linen as nn
import jax
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

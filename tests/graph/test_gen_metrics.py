"""Generation metrics: MMD identities and a loop transcription, validity, uniqueness, novelty."""

import math

import networkx as nx
import numpy as np

from netlab.graph import gen_metrics as M
from netlab.graph import spectre_data as S


def loop_mmd2(xs, ys, sigma):
    """Direct transcription: normalise, pad, TV, Gaussian, biased MMD^2 with self-pairs."""
    length = max(len(h) for h in xs + ys)

    def prep(h):
        p = [v / sum(h) for v in h]
        return p + [0.0] * (length - len(p))

    xs, ys = [prep(h) for h in xs], [prep(h) for h in ys]

    def k(p, q):
        tv = 0.5 * sum(abs(a - b) for a, b in zip(p, q))
        return math.exp(-tv * tv / (2 * sigma * sigma))

    kxx = sum(k(a, b) for a in xs for b in xs) / len(xs) ** 2
    kyy = sum(k(a, b) for a in ys for b in ys) / len(ys) ** 2
    kxy = sum(k(a, b) for a in xs for b in ys) / (len(xs) * len(ys))
    return kxx + kyy - 2 * kxy


def test_mmd_is_zero_on_itself_and_matches_loops():
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 5, rng.integers(3, 8)).astype(float) + 0.1 for _ in range(4)]
    ys = [rng.integers(0, 5, rng.integers(3, 8)).astype(float) + 0.1 for _ in range(3)]
    assert abs(M.gaussian_tv_mmd2(xs, xs, 1.0)) < 1e-12
    for sigma in (0.1, 1.0):
        np.testing.assert_allclose(M.gaussian_tv_mmd2(xs, ys, sigma), loop_mmd2(xs, ys, sigma))
    graphs = S.generate("planar", 3, seed=0)
    for stat in M.STATS:
        assert abs(M.mmd(graphs, graphs, stat)) < 1e-12
    assert M.mmd(graphs, [nx.cycle_graph(64)] * 2, "degree") > 0.1


def test_validity_uniqueness_novelty():
    planar = S.generate("planar", 2, seed=0)
    assert all(M.is_planar_valid(g) for g in planar)
    assert not M.is_planar_valid(nx.complete_graph(5))
    assert not M.is_planar_valid(nx.disjoint_union(planar[0], planar[1]))
    assert all(M.is_sbm_valid(g) for g in S.generate("sbm", 2, seed=0))
    assert not M.is_sbm_valid(planar[0])
    relabelled = nx.relabel_nodes(planar[0], {i: 63 - i for i in range(64)})
    gen = [planar[0], relabelled, planar[1], nx.path_graph(5)]
    np.testing.assert_array_equal(M.unique_flags(gen), [True, False, True, True])
    np.testing.assert_array_equal(M.novel_flags(gen, [planar[1]]), [True, True, False, True])
    out = M.evaluate(gen, [planar[1]], planar, "planar")
    assert out["validity"] == 1.0 and out["vun"] == 0.5


def test_pictures_and_marginal_baseline():
    """The marginal baseline is symmetric with an empty diagonal and padding, with the training
    edge density; the picture is an RGB uint8 array with one row per set."""
    import jax

    from netlab.graph import digress

    counts = np.array([12, 9] * 20)
    e, mask = digress.marginal_baseline(jax.random.key(0), counts, 12, np.array([0.7, 0.3]))
    e, mask = np.asarray(e), np.asarray(mask)
    np.testing.assert_array_equal(e, np.swapaxes(e, 1, 2))
    assert not e[:, np.arange(12), np.arange(12)].any() and not e[~mask].any()
    pairs = sum(c * (c - 1) for c in counts)
    assert abs(e.sum() / pairs - 0.3) < 0.03
    graphs = [nx.cycle_graph(5), nx.complete_graph(5)]
    img = M.draw_graphs({"a": graphs, "b": graphs[:1]}, per_row=2, kind="planar")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3 and img.std() > 0

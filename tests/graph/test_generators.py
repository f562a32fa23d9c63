"""SBM / CSBM / DSBM generators: densities and flow directions match their parameters."""

import numpy as np
import pytest

from netlab.graph import generators


def _z(count, trials, p):
    return abs(count - trials * p) / np.sqrt(trials * p * (1 - p))


def test_sbm_edge_density_matches_p_and_q():
    sizes, p, q = (60, 60, 80), 0.3, 0.05
    s, r, y = generators.sbm(sizes, p, q, rng=1)
    n = sum(sizes)
    assert len(y) == n and np.all(s != r)
    # symmetric, no duplicates
    pairs = set(zip(s.tolist(), r.tolist()))
    assert len(pairs) == len(s) and all((b, a) in pairs for a, b in pairs)
    und = s < r
    same = y[s[und]] == y[r[und]]
    n_in_pairs = sum(m * (m - 1) // 2 for m in sizes)
    n_out_pairs = n * (n - 1) // 2 - n_in_pairs
    assert _z(same.sum(), n_in_pairs, p) < 4
    assert _z((~same).sum(), n_out_pairs, q) < 4
    # receivers sorted
    assert np.all(np.diff(r) >= 0)


def test_csbm_features_carry_class_means():
    s, r, y, x = generators.contextual_sbm((100, 100), 0.1, 0.02, feature_dim=16, mu=3.0, rng=0)
    assert x.shape == (200, 16) and x.dtype == np.float32
    m0, m1 = x[y == 0].mean(0), x[y == 1].mean(0)
    # class means of norm mu (3) with noise std 1/sqrt(100) per coordinate
    assert abs(np.linalg.norm(m0) - 3.0) < 0.6 and abs(np.linalg.norm(m1) - 3.0) < 0.6
    assert np.linalg.norm(m0 - m1) > 2.0


@pytest.mark.parametrize("eta", [0.0, 0.1, 0.3])
def test_dsbm_flow_fraction_matches_eta(eta):
    F = generators.meta_graph("path", 2, eta)
    np.testing.assert_allclose(F, [[0.5, 1 - eta], [eta, 0.5]])
    n, p = 400, 0.2
    s, r, y = generators.dsbm(n, 2, p, F, rng=3)
    cross = y[s] != y[r]
    forward = (y[s] == 0) & (y[r] == 1)
    frac_back = 1.0 - forward.sum() / cross.sum()
    total = cross.sum()
    # fraction of cross edges against the planted flow ~ Binomial(total, eta) / total
    tol = 4 * np.sqrt(max(eta * (1 - eta), 1e-12) / total) + 1e-12
    assert abs(frac_back - eta) <= tol
    # cross-cluster density: p * (F01 + F10) / 2 = p / 2 per ordered pair
    assert _z(total, 2 * 200 * 200, p / 2) < 4
    # nodes were permuted: labels are not sorted
    assert np.any(np.diff(y) < 0)


def test_meta_graph_styles_are_flows():
    for style in generators.STYLES:
        F = generators.meta_graph(style, 6, 0.2, ambient=False, rng=0)
        np.testing.assert_allclose(F + F.T, np.ones((6, 6)))
        F = generators.meta_graph(style, 6, 0.2, ambient=True, rng=0)
        np.testing.assert_allclose(F[-1, :-1], 0.5)
    F = generators.meta_graph("cyclic", 3, 0.0)
    assert F[0, 1] == 1.0 and F[1, 2] == 1.0 and F[2, 0] == 1.0 and F[1, 0] == 0.0
    with pytest.raises(ValueError, match="eta"):
        generators.meta_graph("path", 3, 0.7)

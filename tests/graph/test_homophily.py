"""CFH (Lee et al. 2024): closed forms on planted graphs (edges only inside equal-residual groups:
1; complete bipartite across them: −(n−2)/(2(n−1))), agreement with a loop transcription on a
random directed graph with an isolated node, CSBM-X degrees and the sign of τ, and the feature
shuffle keeping every class's multiset of features."""

import itertools

import numpy as np

from netlab.graph import homophily as H

N = 8


def planted():
    y = np.arange(N) % 2
    resid = np.where(np.arange(N) < N // 2, 1.5, -1.5)  # class means of the residual are 0
    return (resid + 5.0 * y)[:, None], y


def both_ways(pairs):
    p = np.array(pairs)
    return np.concatenate([p[:, 0], p[:, 1]]), np.concatenate([p[:, 1], p[:, 0]])


def test_cfh_planted_closed_forms():
    x, y = planted()
    half = N // 2
    inside = [p for p in itertools.combinations(range(N), 2) if (p[0] < half) == (p[1] < half)]
    across = [(i, j) for i in range(half) for j in range(half, N)]
    assert np.isclose(H.cfh(x, y, *both_ways(inside)), 1.0)
    assert np.isclose(H.cfh(x, y, *both_ways(across)), -(N - 2) / (2 * (N - 1)))
    assert H.cfh(5.0 * y[:, None], y, *both_ways(across)) == 0.0  # constant residuals: 0/0 -> 0


def test_cfh_matches_loop_transcription():
    rng = np.random.default_rng(0)
    n = 9
    x, y = rng.normal(size=(n, 3)), rng.integers(0, 3, n)
    s, r = rng.integers(0, n - 1, 20), rng.integers(0, n - 1, 20)  # node n-1 is isolated
    keep = s != r
    s, r = s[keep], r[keep]
    xc = np.array([x[i] - x[y == y[i]].mean(0) for i in range(n)])
    dist = lambda i, j: np.linalg.norm(xc[i] - xc[j])  # noqa: E731
    b = [np.mean([dist(i, j) for j in range(n) if j != i]) for i in range(n)]
    d = {i: np.mean([dist(i, j) for j, t in zip(s, r) if t == i]) for i in set(r.tolist())}
    h = np.mean([b[i] - d[i] if i in d else 0.0 for i in range(n)])
    want = h / (np.mean(b) if h >= 0 else np.mean(list(d.values())))
    assert np.isclose(H.cfh(x, y, s, r), want, rtol=1e-10)


def test_csbm_x_degrees_tau_sign_and_shuffle():
    vals = []
    for tau in (-4.0, 0.0, 4.0):
        x, y, s, r = H.csbm_x(n=60, d_pos=3, d_neg=2, tau=tau, sigma=2.0, rng=1)
        same = y[s] == y[r]
        assert np.all(np.bincount(r[same], minlength=60) == 3)
        assert np.all(np.bincount(r[~same], minlength=60) == 2)
        assert not np.any(s == r) and len(set(zip(s, r))) == len(s)
        vals.append(H.cfh(x, y, s, r))
    assert vals[0] < vals[1] < vals[2] and vals[0] < 0 < vals[2]
    groups = np.arange(60) % 3
    xs = H.shuffle_features(x, y, 0.5, groups, rng=2)
    assert not np.allclose(xs, x)
    for c, grp in itertools.product((0, 1), range(3)):
        m = (y == c) & (groups == grp)
        np.testing.assert_array_equal(np.sort(xs[m], 0), np.sort(x[m], 0))

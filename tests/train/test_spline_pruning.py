"""Spline-based pruning (You, Balestriero et al. 2022) on a layer whose partition is known in closed
form: a rescaled copy of a hyperplane and its mirror image cut the data exactly as the original,
a hyperplane beyond the data does not cut it, so exactly those units are pruned; the code distance
is numpy's Hamming fraction and the early-bird epoch is the first stable one."""

import numpy as np

from netlab.train import spline_pruning as sp

RNG = np.random.default_rng(0)


def test_redundant_hyperplanes_are_pruned_and_distances_are_hamming():
    x = RNG.uniform(-1, 1, (200, 2))
    w = np.array([[1.0, 2.0, -1.0, 0.0, 1.0], [0.5, 1.0, -0.5, 1.0, 1.0]])
    b = np.array([0.1, 0.2, -0.1, 0.0, 5.0])  # unit 1 = 2 x unit 0, unit 2 = -unit 0, unit 4 off
    pre = x @ w + b
    keep = sp.redundant_units(pre)
    # unit 1 has the largest spread: kept; units 0 and 2 are its hyperplane; unit 4 misses the data
    np.testing.assert_array_equal(keep, [False, True, False, True, False])
    np.testing.assert_array_equal(sp.redundant_units(pre, scores=[5, 4, 3, 2, 1]), [1, 0, 0, 1, 0])
    a, c = sp.unit_codes(pre), sp.unit_codes(pre + RNG.normal(0, 0.3, pre.shape))
    assert sp.code_distance(a, a) == 0.0
    assert sp.code_distance(a, c) == np.count_nonzero(a != c) / a.size > 0
    # a unit whose code differs from unit 0's on 20 of 200 examples (0.1): pruned at threshold
    # 0.1, kept at 0.05
    other = np.where(np.arange(200) < 20, -pre[:, 0], pre[:, 0])
    pair = np.stack([pre[:, 0], other], axis=1)
    assert not sp.redundant_units(pair, threshold=0.1, scores=[2, 1])[1]
    assert sp.redundant_units(pair, threshold=0.05, scores=[2, 1])[1]


def test_early_bird_is_the_first_stable_epoch():
    base = RNG.random((4, 50)) > 0.5
    flip = lambda k: np.where(np.arange(50) < k, ~base, base)  # noqa: E731
    codes = [flip(20), flip(10), flip(5), flip(4), flip(4), flip(4)]  # distances .2 .1 .02 0 0 ..
    assert sp.early_bird(codes, eps=0.03, patience=1) == 3
    assert sp.early_bird(codes, eps=0.03, patience=3) == 5
    assert sp.early_bird(codes, eps=0.001, patience=3) is None


def test_drop_units_folds_dead_and_constant_units_exactly_and_keeps_the_mean():
    x = RNG.normal(size=(64, 3))
    w = RNG.normal(size=(3, 5))
    b = RNG.normal(size=5)
    w[:, 1], b[1] = 0.0, 0.7  # constant unit: relu = 0.7 everywhere
    b[2] = -50.0  # dead unit
    b[3] = 50.0  # always-on, affine (not constant)
    w2, b2 = RNG.normal(size=(5, 4)), RNG.normal(size=4)
    act = np.maximum(x @ w + b, 0)
    out = act @ w2 + b2
    assert not sp.redundant_units(x @ w + b)[[1, 2, 3]].any()
    keep = np.array([True, False, False, True, True])
    sw, sb, sw2, sb2 = sp.drop_units(w, b, w2, b2, keep, act)
    assert sw.shape == (3, 3) and sb.shape == (3,) and sw2.shape == (3, 4)
    np.testing.assert_allclose(np.maximum(x @ sw + sb, 0) @ sw2 + sb2, out, atol=1e-12)
    # also dropping the always-on unit: the mean over the probe batch is kept, not the function
    keep[3] = False
    sw, sb, sw2, sb2 = sp.drop_units(w, b, w2, b2, keep, act)
    folded = np.maximum(x @ sw + sb, 0) @ sw2 + sb2
    np.testing.assert_allclose(folded.mean(0), out.mean(0), atol=1e-12)
    assert np.abs(folded - out).max() > 0.1

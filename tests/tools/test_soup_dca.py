"""Deep Combinatorial Aggregation (Shen & Cremers 2022) and the combinatorial soup in
netlab/tools/soup.py: DCWA of identical runs is those runs bit for bit and DCWA of different runs
is numpy's mean; a DCA proposal takes each component whole from one instance; the exhaustive
subset search finds the subset whose mean is exactly the optimum of a quadratic score (closed
form), which the greedy soup misses."""

import jax
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.tools import soup

RNG = np.random.default_rng(0)


def _tree(scale=1.0):
    return {
        "dense": {"kernel": scale * RNG.normal(size=(3, 2)), "bias": scale * RNG.normal(size=2)},
        "emb": (scale * RNG.normal(size=(4,))).astype(np.float32),
    }


def test_dcwa_identity_and_mean():
    a, b, c = _tree(), _tree(2.0), _tree(3.0)
    same = soup.dcwa([a, jax.tree.map(np.copy, a), a], "leaf")
    for x, y in zip(jax.tree.leaves(same), jax.tree.leaves(a)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    for granularity in soup.GRANULARITIES:
        mean = soup.dcwa([a, b, c], granularity)
        for x, *ys in zip(*(jax.tree.leaves(t) for t in (mean, a, b, c))):
            np.testing.assert_allclose(x, np.mean(ys, axis=0), rtol=1e-6)
    with pytest.raises(UserError, match="granularity"):
        soup.dcwa([a], "neuron")


def test_dca_proposals_take_each_component_from_one_instance():
    trees = [jax.tree.map(lambda x, k=k: np.full_like(x, k), _tree()) for k in range(3)]
    assert soup.components(trees[0], "module") == [0, 0, 1]  # dense.{bias,kernel}, emb
    for granularity, groups in (("model", 1), ("module", 2), ("leaf", 3)):
        picks = set()
        for p in soup.dca_proposals(trees, 40, granularity, seed=1):
            owner = [int(x.flat[0]) for x in jax.tree.leaves(p)]
            assert all((x == o).all() for x, o in zip(jax.tree.leaves(p), owner))
            assert len(set(soup.components(trees[0], granularity))) == groups
            if granularity != "leaf":
                assert owner[0] == owner[1]  # kernel and bias of one module travel together
            picks.add(tuple(owner))
        mixed = any(len(set(o)) > 1 for o in picks)  # some proposal combines instances
        assert mixed == (granularity != "model"), granularity
    probs = soup.dca_predict(lambda p, x: p["emb"] * x, trees, 2.0, num=4, granularity="model")
    assert probs.shape == (4,)


def test_combinatorial_soup_finds_the_closed_form_subset():
    # score = -(mean - 0)^2: the mean of runs {1, 2} (2 and -2) is exactly 0, the optimum; greedy
    # starts from 0.1 and every addition (mean 1.05, -0.95, 2.55) scores worse, so it keeps {0}
    runs = [{"w": np.float64(v)} for v in (0.1, 2.0, -2.0, 5.0)]

    def score(t):
        return -(float(t["w"]) ** 2)

    out, kept, scores = soup.combinatorial(runs, score)
    assert kept == [1, 2] and scores["soup"] == 0.0 and float(out["w"]) == 0.0
    _, greedy_kept, greedy_scores = soup.greedy(runs, score)
    assert greedy_kept == [0] and greedy_scores["soup"] < scores["soup"]
    _, worst, _ = soup.combinatorial(runs, score, mode="min")
    assert worst == [3]
    with pytest.raises(UserError, match="at most 12"):
        soup.combinatorial(runs * 4, score)

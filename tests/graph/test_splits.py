"""GRAND's evaluation protocol (netlab.graph.splits): largest connected component and random
development / train / val / test splits."""

import numpy as np
import pytest

from netlab.errors import UserError
from netlab.graph import datasets as D
from netlab.graph import splits


def two_components(n_big=60, n_small=5, classes=3, seed=0):
    """A path over n_big nodes (interleaved with) a path over n_small nodes, both directions."""
    rng = np.random.default_rng(seed)
    n = n_big + n_small
    order = rng.permutation(n)
    big, small = np.sort(order[:n_big]), np.sort(order[n_big:])
    edges = [(a, b) for path in (big, small) for a, b in zip(path[:-1], path[1:])]
    e = np.array(edges + [(b, a) for a, b in edges])
    e = e[np.lexsort((e[:, 0], e[:, 1]))]
    ds = D.NodeDataset(
        name="toy",
        x=rng.normal(size=(n, 4)).astype(np.float32),
        y=(np.arange(n) % classes).astype(np.int32),
        senders=e[:, 0].astype(np.int32),
        receivers=e[:, 1].astype(np.int32),
        num_classes=classes,
        train_mask=np.zeros(n, bool),
        val_mask=np.zeros(n, bool),
        test_mask=np.zeros(n, bool),
    )
    return ds, big


def test_largest_component_and_subgraph_renumber_in_order():
    ds, big = two_components()
    keep = splits.largest_component(ds.senders, ds.receivers, ds.num_nodes)
    np.testing.assert_array_equal(keep, big)
    sub = splits.subgraph(ds, keep)
    assert sub.num_nodes == len(big) and sub.num_edges == 2 * (len(big) - 1)
    np.testing.assert_array_equal(sub.x, ds.x[big])
    # edge j -> i of the subgraph is edge big[j] -> big[i] of the original
    orig = set(zip(ds.senders.tolist(), ds.receivers.tolist()))
    assert {(big[s], big[r]) for s, r in zip(sub.senders, sub.receivers)} <= orig


def test_random_split_follows_the_protocol():
    ds, _ = two_components(n_big=200)
    a = splits.lcc_random(ds, seed=0, num_development=90, num_per_class=5)
    b = splits.lcc_random(ds, seed=1, num_development=90, num_per_class=5)
    for s in (a, b):
        tr, va, te = s.train_mask, s.val_mask, s.test_mask
        assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
        assert (tr | va | te).all()
        assert tr.sum() == 15 and (tr | va).sum() == 90  # development = train + val
        assert np.bincount(s.y[tr]).tolist() == [5, 5, 5]
    # the development (hence the test) set is fixed; the training draw depends on the seed
    np.testing.assert_array_equal(a.test_mask, b.test_mask)
    assert not np.array_equal(a.train_mask, b.train_mask)
    again = splits.lcc_random(ds, seed=0, num_development=90, num_per_class=5)
    np.testing.assert_array_equal(a.train_mask, again.train_mask)


def test_split_protocol_errors_are_one_line():
    ds, _ = two_components()
    with pytest.raises(UserError, match="data.split_protocol"):
        splits.apply_protocol(ds, "random", 0)
    with pytest.raises(UserError, match="development nodes"):
        splits.lcc_random(ds, 0, num_development=1000)
    assert splits.apply_protocol(ds, "given", 0) is ds


def _grand_code_split(y, seed, num_development, num_per_class):
    """GRAND's data.py set_train_val_test_split, transcribed: one RandomState(seed) for the
    development draw and a fresh RandomState(seed) for the per-class training draws."""
    rnd = np.random.RandomState(seed)
    dev = rnd.choice(len(y), num_development, replace=False)
    rnd = np.random.RandomState(seed)
    train = []
    for c in range(y.max() + 1):
        train.extend(rnd.choice(dev[np.where(y[dev] == c)[0]], num_per_class, replace=False))
    masks = np.zeros((3, len(y)), bool)
    masks[0, train] = True
    masks[1, [i for i in dev if i not in train]] = True
    masks[2, [i for i in range(len(y)) if i not in dev]] = True
    return masks


def test_lcc_grand_draws_the_development_set_with_the_split_seed():
    ds, big = two_components(n_big=200)
    kw = dict(num_development=90, num_per_class=5)
    a, b = (splits.apply_protocol(ds, "lcc_grand", s, **kw) for s in (3, 4))
    sub = splits.subgraph(ds, big)
    for seed, s in ((3, a), (4, b)):
        expect = _grand_code_split(sub.y, seed, **kw)
        got = np.stack([s.train_mask, s.val_mask, s.test_mask])
        np.testing.assert_array_equal(got, expect)
    # unlike lcc_random, the test set moves with the seed
    assert not np.array_equal(a.test_mask, b.test_mask)

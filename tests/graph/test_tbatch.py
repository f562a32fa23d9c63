"""t-batches and the t-batch loss corrections (Loghmani & Fazli 2023)."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import tbatch


def test_assign_puts_each_node_once_per_tbatch_in_order():
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 5, 40), rng.integers(5, 9, 40)
    b = tbatch.assign(src, dst)
    for k in range(b.max() + 1):
        nodes = np.concatenate([src[b == k], dst[b == k]])
        assert len(nodes) == len(set(nodes))
    for node in range(9):
        ids = b[(src == node) | (dst == node)]
        assert np.all(np.diff(ids) > 0)  # a node's events stay in order
    np.testing.assert_array_equal(tbatch.assign([0, 1, 0, 2], [3, 3, 4, 5]), [0, 1, 1, 0])


def test_losses_relate_as_the_paper_says():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(2, 12, 3)).astype(np.float32)
    bid = np.repeat(np.arange(3), 4)  # equal-size t-batches of 4 events
    mask = np.ones(12, bool)

    def all_losses(pred, target, bid, mask):
        return [tbatch.prediction_loss(pred, target, bid, 4, mask, r) for r in tbatch.REDUCTIONS]

    run = jax.jit(all_losses)
    mean, item, full = (float(v) for v in run(pred, target, bid, mask))
    np.testing.assert_allclose(item, 4 * mean, rtol=1e-5)  # constant factors only
    np.testing.assert_allclose(full, 3 * item, rtol=1e-5)
    per_event = [float(np.mean((pred[j] - target[j]) ** 2)) for j in range(12)]
    np.testing.assert_allclose(item, sum(per_event), rtol=1e-5)
    # unequal sizes + padding: "mean" weighs each t-batch equally, padding counts nowhere
    bid2 = np.array([0] * 6 + [1] * 2 + [2] * 4)
    mask2 = np.arange(12) < 10
    mean2, item2, _ = (float(v) for v in run(pred, target, bid2, mask2))
    pe = np.array(per_event)
    np.testing.assert_allclose(mean2, pe[:6].mean() + pe[6:8].mean() + pe[8:10].mean(), rtol=1e-5)
    np.testing.assert_allclose(item2, pe[:10].sum(), rtol=1e-5)
    assert jnp.isfinite(mean2)


def test_pack_cuts_windows_into_tbatch_pieces():
    rng = np.random.default_rng(2)
    src, dst = rng.integers(0, 6, 50), rng.integers(6, 9, 50)  # 3 items: large t-batch counts
    windows = tbatch.pack(src, dst, window=16, size=3)
    assert len(windows) == 4  # 16 + 16 + 16 + 2 events
    for w, pieces in enumerate(windows):
        lo, hi = 16 * w, min(16 * w + 16, 50)
        ids = tbatch.assign(src[lo:hi], dst[lo:hi])
        flat = np.concatenate(pieces)
        np.testing.assert_array_equal(np.sort(flat), np.arange(lo, hi))  # each event once
        # pieces follow the t-batch order and never mix t-batches
        np.testing.assert_array_equal(ids[flat - lo], np.sort(ids[flat - lo]))
        # as few pieces as the size allows: ceil(n / 3) per t-batch of n events (one event per
        # piece, or pieces cut below `size` without need, would give more)
        _, counts = np.unique(ids, return_counts=True)
        assert len(pieces) == int(np.sum(-(-counts // 3))) > 0
        for p in pieces:  # JODIE's point: no node twice in a piece (its updates commute)
            nodes = np.r_[src[p], dst[p]]
            assert len(nodes) == len(set(nodes))


def test_pack_cuts_at_tbatch_boundaries():
    """T-batch sizes 2 then 3 with size 3: the pieces are [0, 1] and [2, 3, 4]. A packer that
    chunked the window in time order ([0, 1, 2], [3, 4]) has the same piece count and order, and
    only this exact answer tells them apart."""
    src, dst = np.array([0, 1, 0, 1, 5]), np.array([5, 6, 7, 8, 9])
    np.testing.assert_array_equal(tbatch.assign(src, dst), [0, 0, 1, 1, 1])
    (pieces,) = tbatch.pack(src, dst, window=8, size=3)
    assert [p.tolist() for p in pieces] == [[0, 1], [2, 3, 4]]
    (pieces,) = tbatch.pack(src, dst, window=8, size=2)  # the 3-event t-batch cut as 2 + 1
    assert [p.tolist() for p in pieces] == [[0, 1], [2, 3], [4]]

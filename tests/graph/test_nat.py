"""NAT (Luo & Li, 2022): the N-cache write equals a sequential numpy transcription, the caches
after a stream equal a numpy replay of NAT's update rules, and predictions never see the
future."""

import functools

import jax
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.graph import events, nat, tgn

N, BS, SIZES, SEED = 10, 4, (4, 3), 1


@functools.lru_cache
def _setup():
    model = nat.NAT(N, 8, 4, 4, SIZES, 0.5, SEED, 4, 2, 3)
    _, batches = _data()
    first = jax.tree.map(lambda x: x[0], batches)
    shapes = jax.eval_shape(
        lambda k: model.init(k, model.init_state(), first, method=nat.NAT.step),
        jax.random.key(0),
    )
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.normal(0, 0.4, x.shape).astype(np.float32), shapes)
    return model, params, jax.jit(functools.partial(tgn.run, model))


def _data(seed=2):
    stream, _ = events.synthetic_stream(num_nodes=N, num_events=22, feat_dim=3, seed=seed)
    neg = events.sample_negatives(stream, len(stream), seed=0)
    return stream, events.pad_batches(stream, BS, neg)


def _np_hash(a, m):
    s = SEED % 100
    a = np.asarray(a) % m
    return (a * s + a * a * (s + 1)) % m


def _np_write(ids, times, owner, key, key_t, valid, u, alpha):
    """Writes in order; occupancy from the pre-batch cache; a later accepted write overwrites."""
    before = ids.copy()
    ids, times = ids.copy(), times.copy()
    for o, k, kt, v, r in zip(owner, key, key_t, valid, u):
        slot = _np_hash(k, ids.shape[1])
        cur = before[o, slot]
        if v and (cur < 0 or cur == k or r < alpha):
            ids[o, slot], times[o, slot] = k, kt
    return ids, times


def test_cache_write_equals_sequential_numpy():
    rng = np.random.default_rng(0)
    n, m, w = 5, 4, 40
    ids = np.where(rng.random((n, m)) < 0.5, rng.integers(0, 9, (n, m)), -1).astype(np.int32)
    times = rng.random((n, m)).astype(np.float32)
    reps = times[..., None].copy()
    owner, key = rng.integers(0, n, w), rng.integers(0, 9, w)
    key_t = np.arange(w, dtype=np.float32)
    valid, u = rng.random(w) < 0.8, rng.random(w).astype(np.float32)
    got = jax.jit(nat.cache_write, static_argnums=(9, 10))(
        ids, times, reps, owner, key, key_t, key_t[:, None], valid, u, 0.5, SEED
    )
    want_ids, want_t = _np_write(ids, times, owner, key, key_t, valid, u, 0.5)
    np.testing.assert_array_equal(got[0], want_ids)
    np.testing.assert_array_equal(got[1], want_t)
    np.testing.assert_array_equal(got[2][..., 0], want_t)  # the payload moves with its key
    assert (want_ids != ids).sum() > 5  # the case exercises writes, rejections and ties


def _np_replay(batches, seed=0):
    """NAT's cache rules batch by batch (module docstring), ids and times only."""
    c1, t1 = np.full((N, SIZES[0]), -1), np.zeros((N, SIZES[0]), np.float32)
    c2, t2 = np.full((N, SIZES[1]), -1), np.zeros((N, SIZES[1]), np.float32)
    c0 = np.zeros(N, np.float32)
    rng = jax.random.key_data(jax.random.key(seed))
    for b in range(batches["src"].shape[0]):
        src, dst, t, mask = (np.asarray(batches[k][b]) for k in ("src", "dst", "t", "mask"))
        rng, u1, u2 = nat.write_draws(rng, BS, SIZES)
        x = np.stack([src, dst], 1).reshape(-1)
        y = np.stack([dst, src], 1).reshape(-1)
        tt, mm = np.repeat(t, 2), np.repeat(mask, 2)
        m1 = SIZES[0]
        h1 = c1[x].reshape(-1)
        c2, t2 = _np_write(
            c2,
            t2,
            np.repeat(y, m1),
            h1,
            t1[x].reshape(-1),
            (h1 >= 0) & np.repeat(mm, m1),
            np.asarray(u2),
            0.5,
        )
        c1, t1 = _np_write(c1, t1, x, y, tt, mm, np.asarray(u1), 0.5)
        for i in np.nonzero(mm)[0]:
            c0[x[i]] = tt[i]
    return c0, c1, t1, c2, t2


def test_caches_after_a_stream_equal_a_numpy_replay():
    _, params, run = _setup()
    _, batches = _data()
    state, (pos, neg) = run(params, batches)
    c0, c1, t1, c2, t2 = _np_replay(batches)
    np.testing.assert_array_equal(state["c1_id"], c1)
    np.testing.assert_array_equal(state["c1_t"], t1)
    np.testing.assert_array_equal(state["c2_id"], c2)
    np.testing.assert_array_equal(state["c2_t"], t2)
    np.testing.assert_array_equal(state["c0_t"], c0)
    np.testing.assert_array_equal(state["last_update"], c0)
    assert (c2 >= 0).sum() > 5 and np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))


def test_no_information_from_the_future():
    _, params, run = _setup()
    stream, batches = _data()
    cut = 13  # batch 3 holds events 12..15: the cut falls inside a batch
    t_cut = stream.t[cut]
    rng = np.random.default_rng(5)
    late = stream.t > t_cut
    k = int(late.sum())
    src = rng.integers(0, N, k)
    changed = events.make_stream(
        np.r_[stream.src[~late], src],
        np.r_[stream.dst[~late], (src + rng.integers(1, N, k)) % N],
        np.r_[stream.t[~late], t_cut + np.sort(rng.uniform(0.01, 3.0, k))],
        np.r_[stream.feat[~late], rng.normal(size=(k, 3))],
        num_nodes=N,
    )
    neg = events.sample_negatives(stream, len(stream), seed=0)
    neg2 = np.r_[neg[~late], rng.integers(0, N, k)]
    _, (pos_a, neg_a) = run(params, batches)
    _, (pos_b, neg_b) = run(params, events.pad_batches(changed, BS, neg2))
    early = np.arange(batches["t"].size).reshape(batches["t"].shape) <= cut
    np.testing.assert_array_equal(np.asarray(pos_a)[early], np.asarray(pos_b)[early])
    np.testing.assert_array_equal(np.asarray(neg_a)[early], np.asarray(neg_b)[early])
    assert not np.allclose(np.asarray(pos_a)[~early], np.asarray(pos_b)[~early])


def test_bad_values_are_one_line_errors():
    with pytest.raises(UserError, match="model.replace_prob"):
        nat.NAT(num_nodes=3, replace_prob=1.5)
    with pytest.raises(UserError, match="cache_sizes"):
        nat.NAT(num_nodes=3, cache_sizes=(4, 4, 4))

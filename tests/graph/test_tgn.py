"""TGN memory: the scanned model equals a numpy transcription (messages, time encoding,
last/mean aggregation, GRU), predictions never see the future, node relabelling is equivariant,
AP matches its rank definition, and PRES (Su et al., 2024) without correction is exactly TGN, in
the library and through the registered ``graph.temporal_link`` routes."""

import functools
import pathlib

import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.errors import UserError
from netlab.graph import events, pres, tgn
from netlab.graph.temporal_task import TemporalLinkPrediction

N, D, TD, BS = 10, 8, 4, 4


@functools.lru_cache
def _setup(aggregator, embedding):
    model = tgn.TGN(N, D, TD, aggregator, embedding, num_neighbors=3, edge_dim=3)
    stream, batches = _data()
    first = jax.tree.map(lambda x: x[0], batches)
    # Random parameters of the right shapes (tracing only, no compile); biases are nonzero too.
    shapes = jax.eval_shape(
        lambda k: model.init(k, model.init_state(), first, method=tgn.TGN.step),
        jax.random.key(0),
    )
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.normal(0, 0.4, x.shape).astype(np.float32), shapes)
    return model, params, jax.jit(functools.partial(tgn.run, model))


def _data(seed=2):
    stream, _ = events.synthetic_stream(num_nodes=N, num_events=22, feat_dim=3, seed=seed)
    neg = events.sample_negatives(stream, len(stream), seed=0)
    return stream, events.pad_batches(stream, BS, neg)  # 6 batches, the last half padding


def _numpy_run(params, b, aggregator, gamma=0.0):
    """TGN's memory equations event by event; ``gamma`` > 0 adds PRES's prediction-correction."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)["params"]
    g, w, bb = p["gru"], p["time_enc"]["w"], p["time_enc"]["b"]

    def dense(q, x):
        return x @ q["kernel"] + q.get("bias", 0.0)

    def gru(x, h):
        sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        r = sig(dense(g["ir"], x) + dense(g["hr"], h))
        z = sig(dense(g["iz"], x) + dense(g["hz"], h))
        n = np.tanh(dense(g["in"], x) + r * dense(g["hn"], h))
        return (1 - z) * n + z * h

    def dec(a, c):
        h = np.maximum(dense(p["dec_hidden"], np.concatenate([a, c], -1)), 0)
        return dense(p["dec_out"], h)[..., 0]

    mem, last = np.zeros((N, D)), np.zeros(N)
    count, inc = np.zeros(N), np.zeros((N, D))
    pos, neg = [], []
    for k in range(b["src"].shape[0]):
        src, dst, t, feat, mask = (np.asarray(b[x][k]) for x in ("src", "dst", "t", "feat", "mask"))
        pos.append(dec(mem[src], mem[dst]))
        neg.append(dec(mem[src], mem[b["neg"][k]]))
        msgs = {}
        for e in np.nonzero(mask)[0]:
            for a, c in ((src[e], dst[e]), (dst[e], src[e])):
                phi = np.cos((float(t[e]) - last[a]) * w + bb)
                msgs.setdefault(a, []).append((np.r_[mem[a], mem[c], feat[e], phi], t[e]))
        new_mem, new_last = mem.copy(), last.copy()
        for a, lst in msgs.items():
            m = lst[-1][0] if aggregator == "last" else np.mean([x for x, _ in lst], 0)
            predicted = mem[a] + inc[a] / max(count[a], 1)
            new_mem[a] = gamma * predicted + (1 - gamma) * gru(m, mem[a])
            count[a], inc[a] = count[a] + 1, inc[a] + new_mem[a] - mem[a]
            new_last[a] = max(x for _, x in lst)
        mem, last = new_mem, new_last
    return mem, last, np.array(pos), np.array(neg), count


@pytest.mark.parametrize("aggregator", ["last", "mean"])
def test_scan_equals_numpy_transcription(aggregator):
    model, params, run = _setup(aggregator, "identity")
    _, batches = _data()
    state, (pos, neg) = run(params, batches)
    mem, last, pos_np, neg_np, _ = _numpy_run(params, batches, aggregator)
    assert np.abs(mem).max() > 0.1  # memory moved
    np.testing.assert_allclose(state["memory"], mem, atol=2e-5)
    np.testing.assert_allclose(state["last_update"], last, rtol=1e-6)
    m = batches["mask"]
    np.testing.assert_allclose(np.asarray(pos)[m], pos_np[m], atol=2e-5)
    np.testing.assert_allclose(np.asarray(neg)[m], neg_np[m], atol=2e-5)


@pytest.mark.parametrize("embedding", ["identity", "attention"])
def test_no_information_from_the_future(embedding):
    _, params, run = _setup("last", embedding)
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


@pytest.mark.parametrize("embedding", ["identity", "attention"])
def test_relabelling_nodes_is_equivariant(embedding):
    _, params, run = _setup("last", embedding)
    _, batches = _data()
    perm = np.random.default_rng(0).permutation(N).astype(np.int32)
    relabelled = {**batches, **{k: perm[batches[k]] for k in ("src", "dst", "neg")}}
    state, (pos, neg) = run(params, batches)
    state_p, (pos_p, neg_p) = run(params, relabelled)
    np.testing.assert_allclose(np.asarray(state_p["memory"])[perm], state["memory"], atol=1e-6)
    np.testing.assert_allclose(pos_p, pos, atol=1e-6)
    np.testing.assert_allclose(neg_p, neg, atol=1e-6)


def test_attention_buffers_hold_the_last_k_neighbours():
    _, params, run = _setup("last", "attention")
    stream, batches = _data()
    state = jax.tree.map(np.asarray, run(params, batches)[0])
    for a in range(N):  # the stream is time-sorted without self-loops
        mine = (stream.src == a) | (stream.dst == a)
        other = np.where(stream.src == a, stream.dst, stream.src)[mine]
        times = stream.t[mine].astype(np.float32)
        want = sorted(zip(other[-3:].tolist(), times[-3:].tolist()))
        v = state["nbr_valid"][a]
        assert sorted(zip(state["nbr_id"][a][v].tolist(), state["nbr_t"][a][v].tolist())) == want
        assert state["nbr_count"][a] == mine.sum()


def test_metrics():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=60), rng.random(60) < 0.4
    # Without ties AP is the mean, over positives, of the precision at each positive's rank.
    rank = np.argsort(np.argsort(-scores)) + 1
    prec = [np.sum(labels & (rank <= r)) / r for r in rank[labels]]
    assert tgn.average_precision(scores, labels) == pytest.approx(np.mean(prec), abs=1e-12)
    # Tied scores form one threshold (sklearn's convention): 0.5 * 1/2 + 0.5 * 2/3.
    assert tgn.average_precision([1.0, 1.0, 0.0], [1, 0, 1]) == pytest.approx(7 / 12)
    pos, neg = np.array([[3.0, 2.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [2.0, -1.0]])
    mask = np.array([[True, True], [True, False]])
    # batch 0 is perfectly ranked (AP 1); batch 1 ranks its only negative first (AP 1/2).
    assert tgn.batched_average_precision(pos, neg, mask) == pytest.approx(0.75)
    with pytest.raises(UserError, match="model.aggregator"):
        tgn.TGN(num_nodes=3, aggregator="max")


@functools.lru_cache
def _pres():
    model = pres.PRES(N, D, TD, "last", "identity", num_neighbors=3, edge_dim=3)
    return jax.jit(functools.partial(tgn.run, model))


def _with_gamma(params, gamma):
    """The base model's parameters plus PRES's only extra one, γ."""
    return {"params": {**params["params"], "gamma": np.float32(gamma)}}


def test_pres_without_correction_is_the_base_model():
    _, params, run = _setup("last", "identity")
    _, batches = _data()
    state, (pos, neg) = run(params, batches)
    state0, (pos0, neg0, coherence) = _pres()(_with_gamma(params, 0.0), batches)
    np.testing.assert_array_equal(state0["memory"], state["memory"])
    np.testing.assert_array_equal(pos0, pos)
    np.testing.assert_array_equal(neg0, neg)
    assert np.all((np.asarray(coherence) >= 0) & (np.asarray(coherence) <= 2))


def test_pres_prediction_correction_equals_numpy_transcription():
    _, params, _ = _setup("last", "identity")
    _, batches = _data()
    state, (pos, _, _) = _pres()(_with_gamma(params, 0.9), batches)
    mem, _, pos_np, _, count = _numpy_run(params, batches, "last", gamma=0.9)
    np.testing.assert_allclose(state["memory"], mem, atol=2e-5)
    np.testing.assert_allclose(np.asarray(pos)[batches["mask"]], pos_np[batches["mask"]], atol=2e-5)
    np.testing.assert_array_equal(state["count"], count)
    # Memory starts at zero, so the recorded changes telescope to the final memory.
    np.testing.assert_allclose(state["increment"], state["memory"], atol=1e-5)
    with pytest.raises(UserError, match="model.gamma"):
        pres.PRES(num_nodes=3, gamma=1.5)


ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = {
    "data.num_nodes": N,
    "data.num_events": 30,
    "data.batch_size": BS,
    "data.chunk": 3,
    "model.memory_dim": D,
    "model.time_dim": TD,
    "model.embedding": "identity",
}


def _route(model, **overrides):
    config = configlib.load(ROOT / "configs/graph/tgn.py", f"model={model}", {**TINY, **overrides})
    return TemporalLinkPrediction(config)


def test_pres_route_without_correction_is_the_tgn_route():
    base, off = _route("tgn"), _route("pres", **{"model.correction": False})
    assert type(base.model) is tgn.TGN and type(off.model) is pres.PRES
    shapes = jax.eval_shape(base.init_variables, jax.random.key(0))["params"]
    assert jax.eval_shape(off.init_variables, jax.random.key(0))["params"] == shapes  # no γ
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.normal(0, 0.4, x.shape).astype(np.float32), shapes)
    batch = base.train_batch(1)
    jax.tree.map(np.testing.assert_array_equal, batch, off.train_batch(1))

    def both(p, b):
        loss, _ = base.loss_fn(p, {}, b, None, True)
        loss_off, (metrics, _) = off.loss_fn(p, {}, b, None, True)
        return loss, metrics["bce"], loss_off, metrics["coherence"]

    loss, bce, loss_off, coherence = (float(v) for v in jax.jit(both)(params, batch))
    assert bce == loss  # the same memory, predictions and BCE
    assert coherence > 0 and loss_off == pytest.approx(loss + 0.1 * coherence, rel=1e-6)

"""RNAR: the LSTM aggregator equals a numpy LSTM run over each node's in-neighbours in index order
(one neighbour: one step from the zero state; none: zeros), garbage on non-edges changes nothing,
and reversing the neighbour order changes the aggregate (intended non-invariance). Quickselect
traces select the rank-⌊n/2⌋ key and take Σ_{r=⌊n/2⌋}^{n−1} r inner steps on sorted input. The
reasoning task's batches are deterministic and carry the traces; one step lowers its loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import rnar

N, F, H = 6, 3, 4


def np_lstm(params, xs):
    w_x, w_h, b = params
    h, c = np.zeros(H), np.zeros(H)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for x in xs:
        i, f, g, o = np.split(x @ w_x + h @ w_h + b, 4)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
    return h


def test_lstm_aggregator_matches_numpy_in_node_order():
    rng = np.random.default_rng(0)
    params = (rng.normal(size=(F, 4 * H)), rng.normal(size=(H, 4 * H)), rng.normal(size=4 * H))
    msgs = rng.normal(size=(N, N, F))
    adj = rng.random((N, N)) < 0.5
    adj[0] = False  # no in-neighbours
    adj[1] = np.arange(N) == 3  # one in-neighbour
    adj[2, :3] = True  # at least two, so the order matters
    garbage = np.where(adj[..., None], msgs, 1e3)
    rev = msgs[:, ::-1]
    with jax.enable_x64(True):
        run = jax.jit(jax.vmap(lambda m, a: rnar.lstm_aggregate(params, m, a)))
        out, out_g, out_r = np.asarray(
            run(
                jnp.asarray(np.stack([msgs, garbage, rev])),
                jnp.asarray(np.stack([adj, adj, adj[:, ::-1]])),
            )
        )
    for i in range(N):
        want = np_lstm(params, msgs[i][adj[i]])
        np.testing.assert_allclose(out[i], want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out[0], 0.0)
    np.testing.assert_allclose(out_g, out, rtol=1e-12)
    assert np.abs(out_r[2] - out[2]).max() > 1e-6  # same neighbours, reversed order


def test_quickselect_trace():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 8, 13):
        keys = rng.permutation(n) + rng.random() * 0.1
        sel, hints = rnar.quickselect_trace(keys)
        assert sel == int(np.argsort(keys)[n // 2])
        assert all(len(v) == len(hints["j"]) for v in hints.values())
        _, sorted_hints = rnar.quickselect_trace(np.arange(n, dtype=float))
        assert len(sorted_hints["j"]) == sum(range(n // 2, n))
        assert np.all(sorted_hints["pivot"] >= n // 2)  # pivots are maxima of the shrinking range


def test_nar_task_batches_deterministic_and_one_step_lowers_loss():
    """The Quickselect task's batches are a pure function of (seed, step) with hints matching the
    trace; one SGD step on a batch lowers that batch's loss (max aggregator: the LSTM one is
    checked against numpy above and traced by the registry walk)."""
    from configs import common
    from netlab.graph import nar_task

    c = common.base_config()
    c.task = "graph.algorithmic_reasoning"
    c.model = dict(name="rnar", hidden=8, aggregator="max")
    c.data = dict(n_train=5, n_ood=6, steps_per_node=3, num_eval=2, eval_batch=2)
    c.train.batch_size = 3
    task = nar_task.AlgorithmicReasoning(c)
    b0, b0_again, b1 = task.train_batch(0), task.train_batch(0), task.train_batch(1)
    jax.tree.map(np.testing.assert_array_equal, b0, b0_again)
    assert not np.array_equal(b0["x"], b1["x"])
    for x, h, st, out, last in zip(b0["x"], b0["hints"], b0["steps"], b0["output"], b0["last"]):
        sel, trace = rnar.quickselect_trace(x[:, 1])
        t = len(trace["j"])
        assert sel == out and last == max(t, 1) - 1 and st.sum() == max(t, 1)
        np.testing.assert_array_equal(h[:t], np.stack([trace[k] for k in rnar.HINTS], -1))

    @jax.jit
    def step(key):
        p = nn.unbox(task.init_variables(key))["params"]
        loss = lambda q: task.losses(q, b0)[0]  # noqa: E731
        loss0, g = jax.value_and_grad(loss)(p)
        return loss0, loss(jax.tree.map(lambda a, d: a - 0.05 * d, p, g))

    loss0, loss1 = step(jax.random.key(0))
    assert float(loss1) < float(loss0)

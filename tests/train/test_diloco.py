"""DiLoCo rounds (netlab/train/diloco.py) against their closed forms, and the QSR schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from netlab.errors import UserError
from netlab.train import diloco

D_IN, D_HID, B = 3, 8, 4


@jax.jit
def sgd_step(p, batch, lr):
    return jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss_fn)(p, batch))


def mlp_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.normal(size=(D_IN, D_HID)) / np.sqrt(D_IN), jnp.float32),
        "b1": jnp.zeros(D_HID),
        "w2": jnp.asarray(rng.normal(size=(D_HID, 1)) / np.sqrt(D_HID), jnp.float32),
    }


def loss_fn(p, batch):
    h = jnp.tanh(batch["x"] @ p["w1"] + p["b1"])
    return jnp.mean(((h @ p["w2"])[:, 0] - batch["y"]) ** 2)


def data(k, h, seed=1):
    """(K, H, B, ...) batches: island k's H inner batches."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(k, h, B, D_IN)).astype(np.float32),
        "y": rng.normal(size=(k, h, B)).astype(np.float32),
    }


def mesh_of(k):
    return Mesh(np.asarray(jax.devices()[:k]), ("data",))


def close(a, b, tol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_h1_sgd_equals_synchronous_data_parallel():
    """H = 1, inner SGD, outer SGD lr 1 without momentum: each round is one data-parallel SGD
    step on the mean gradient of the global batch (and the islands are not psum'd K-fold)."""
    k, lr, rounds = 4, 0.1, 2
    algo = diloco.DiLoCo(loss_fn, optax.sgd(lr), mesh_of(k), outer=diloco.outer_optimizer(1.0, 0.0))
    state = algo.init(mlp_params())
    batches = [data(k, 1, seed=s) for s in range(rounds)]
    for b in batches:
        state = algo.round(state, b)
    ref = mlp_params()
    for b in batches:  # the mean loss over K equal shards is the loss of their union
        ref = sgd_step(ref, jax.tree.map(lambda a: a.reshape(k * B, *a.shape[3:]), b), lr)
    close(state.params, ref)


def test_one_island_outer_lr1_equals_plain_inner_steps():
    """K = 1, outer lr 1, no momentum: two rounds of H AdamW steps are 2H plain AdamW steps (the
    inner moments carry over between rounds)."""
    h, inner = 3, optax.adamw(1e-2, weight_decay=0.1)
    algo = diloco.DiLoCo(loss_fn, inner, mesh_of(1), outer=diloco.outer_optimizer(1.0, 0.0))
    state = algo.init(mlp_params())
    batches = [data(1, h, seed=s) for s in range(2)]
    for b in batches:
        state = algo.round(state, b)

    @jax.jit
    def step(p, s, batch):
        u, s = inner.update(jax.grad(loss_fn)(p, batch), s, p)
        return optax.apply_updates(p, u), s

    p, s = mlp_params(), inner.init(mlp_params())
    for b in batches:
        for t in range(h):
            p, s = step(p, s, jax.tree.map(lambda a: a[0, t], b))
    close(state.params, p, 1e-5)


def test_outer_step_is_nesterov_on_the_mean_delta():
    """K = 4, H = 2 inner SGD steps, outer SGD lr 0.7 with Nesterov momentum 0.9: two rounds
    against a numpy transcription (islands run one by one on the host; v = g + m v_prev,
    theta -= lr (g + m v)). Also: only one collective per round, of |theta| bytes, whatever H."""
    k, h, lr, olr, m = 4, 2, 0.05, 0.7, 0.9
    algo = diloco.DiLoCo(loss_fn, optax.sgd(lr), mesh_of(k), outer=diloco.outer_optimizer(olr, m))
    state = algo.init(mlp_params())
    batches = [data(k, h, seed=s) for s in range(2)]
    for b in batches:
        state = algo.round(state, b)

    theta = {n: np.asarray(a, np.float64) for n, a in mlp_params().items()}
    mom = {n: np.zeros_like(a) for n, a in theta.items()}
    for b in batches:
        delta = {n: np.zeros_like(a) for n, a in theta.items()}
        for i in range(k):
            p = {n: jnp.asarray(a, jnp.float32) for n, a in theta.items()}
            for t in range(h):
                p = sgd_step(p, jax.tree.map(lambda a: a[i, t], b), lr)
            for n in theta:
                delta[n] += (theta[n] - np.asarray(p[n], np.float64)) / k
        for n in theta:
            mom[n] = delta[n] + m * mom[n]
            theta[n] = theta[n] - olr * (delta[n] + m * mom[n])
    close(state.params, theta, 1e-5)

    n_bytes = sum(a.size * 4 for a in jax.tree.leaves(state.params))
    for hh in (1, 5):
        comm = diloco.collective_bytes(algo.jaxpr(state, data(k, hh)))
        assert comm == {"all_reduce": n_bytes}


def test_collective_bytes_counts_scan_trips():
    """The counter is not blind: H data-parallel steps (a psum of the gradients inside a scan)
    move H times |theta| bytes, H times DiLoCo's round."""
    mesh, h = mesh_of(4), 5
    params = mlp_params()

    def dp(p, b):
        def step(p, batch):
            g = jax.lax.pmean(jax.grad(loss_fn)(p, batch), "data")
            return jax.tree.map(lambda a, gg: a - 0.1 * gg, p, g), None

        local = jax.lax.pcast(p, ("data",), to="varying")
        return jax.lax.scan(step, local, jax.tree.map(lambda a: a[0], b))[0]

    fn = jax.shard_map(dp, mesh=mesh, in_specs=(jax.P(), jax.P("data")), out_specs=jax.P("data"))
    comm = diloco.collective_bytes(jax.make_jaxpr(fn)(params, data(4, h)))
    assert comm == {"all_reduce": h * sum(a.size * 4 for a in jax.tree.leaves(params))}


def test_qsr_periods_follow_the_rule():
    """QSR: H = max(H_base, floor((alpha / lr)^2)) at each round's first step, capped by the
    remaining steps; H_base during warmup."""
    alpha, h_base, total, warm = 0.05, 2, 60, 4

    def sched(t):  # cosine decay from 0.1 to 0
        return 0.05 * (1 + np.cos(np.pi * t / total))

    got = diloco.qsr_periods(sched, alpha, h_base, total, warmup_steps=warm)
    t, want = 0, []
    while t < total:
        lr = float(sched(t))
        h = h_base if t < warm else max(h_base, int(np.floor((alpha / lr) ** 2)))
        want.append(min(h, total - t))
        t += want[-1]
    assert got == want and sum(got) == total
    assert got[:2] == [2, 2] and max(got) > h_base  # periods grow as the lr decays
    assert diloco.qsr_period(0.01, 0.05, 4) == 25 and diloco.qsr_period(0.1, 0.05, 4) == 4
    assert diloco.qsr_period(0.001, 0.05, 4, remaining=7) == 7
    with pytest.raises(UserError, match="alpha"):
        diloco.qsr_periods(sched, 0.0, 2, 10)

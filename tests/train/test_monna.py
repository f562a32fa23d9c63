"""MoNNA (netlab/train/monna.py): NNA against a numpy transcription, robustness on a toy
least-squares task with Byzantine workers, the reduction to synchronous SGD (f = 0, beta = 0)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from netlab.errors import UserError
from netlab.train import monna

D = 4


def nna_numpy(received, pivot, keep):
    """Transcription: squared distances summed over leaves, stable sort, mean of the first keep."""
    d = sum(((r - p) ** 2).reshape(len(r), -1).sum(1) for r, p in zip(received, pivot))
    idx = np.argsort(d, kind="stable")[:keep]
    return [r[idx].mean(0) for r in received]


def test_nna_matches_numpy_with_ties_and_far_attackers():
    a = np.array([[0.0, 0], [1, 0], [0, 1], [-1, 0], [5, 5], [0, -1]], np.float32)
    b = np.array([[0.0], [0], [0], [0], [3], [0]], np.float32)
    # workers 1, 2, 3, 5 tie at distance 1 from worker 0: the lower indices win
    received = {"a": jnp.asarray(a), "b": jnp.asarray(b)}
    nna = jax.jit(monna.nna)  # one compile: keep is traced
    for i, keep in [(0, 3), (0, 5), (4, 2), (1, 6)]:
        got = nna(received, {"a": a[i], "b": b[i]}, keep)
        want = nna_numpy([a, b], [a[i], b[i]], keep)
        np.testing.assert_allclose(got["a"], want[0], atol=1e-6)
        np.testing.assert_allclose(got["b"], want[1], atol=1e-6)
    np.testing.assert_allclose(nna(received, {"a": a[0], "b": b[0]}, 3)["a"], [1 / 3, 1 / 3])
    # attackers (rows 4, 5 here) farther from the pivot than every honest vector: honest mean
    far = {"a": jnp.asarray(np.concatenate([a[:4], [[50, 50], [-60, 0]]]))}
    got = monna.nna(far, {"a": a[0]}, 4)["a"]
    np.testing.assert_allclose(got, a[:4].mean(0), atol=1e-6)


def toy(n, seed=0):
    """Least squares, every worker its own 16 noise-free rows of the same w*."""
    rng = np.random.default_rng(seed)
    w_star = rng.normal(size=D).astype(np.float32)
    x = rng.normal(size=(n, 16, D)).astype(np.float32)
    return {"x": x, "y": x @ w_star}


def lsq(p, batch):
    return 0.5 * jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)


@pytest.mark.parametrize("kind,scale", [("sign_flip", 1.0), ("noise", 10.0)])
def test_monna_converges_where_plain_averaging_does_not(kind, scale):
    n, f, steps = 8, 2, 150
    data = toy(n)
    local = monna.local_optimizer(0.1, 0.9)

    @jax.jit
    def run(keep):  # keep = n - f is MoNNA, keep = n plain averaging under the same attack
        params = {"w": jnp.zeros((n, D))}
        state = jax.vmap(local.init)(params)

        def body(carry, key):
            p, s = carry
            p, s, _ = monna.step(lsq, local, p, s, data, f, keep, kind, key, scale)
            return (p, s), None

        (p, _), _ = jax.lax.scan(body, (params, state), jax.random.split(jax.random.key(1), steps))
        honest = jax.tree.map(lambda a: a[: n - f], p)
        return jnp.mean(jax.vmap(lsq)(honest, jax.tree.map(lambda a: a[: n - f], data)))

    robust, plain = jax.vmap(run)(jnp.array([n - f, n]))
    assert robust < 1e-4, robust
    assert plain > 0.1, plain


def test_f0_beta0_exact_averaging_is_synchronous_sgd():
    n, lr = 4, 0.1
    data = toy(n, seed=1)
    p0 = {"w": jnp.asarray(np.random.default_rng(2).normal(size=D), jnp.float32)}
    local = monna.local_optimizer(lr, 0.0)

    @jax.jit
    def run(p0):
        params = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), p0)
        state = jax.vmap(local.init)(params)
        for _ in range(2):
            params, state, _ = monna.step(lsq, local, params, state, data, 0)
        ref = p0
        union = {k: v.reshape(n * 16, *v.shape[2:]) for k, v in data.items()}
        for _ in range(2):
            ref = jax.tree.map(lambda a, g: a - lr * g, ref, jax.grad(lsq)(ref, union))
        return params, ref

    params, ref = run(p0)
    for i in range(n):
        np.testing.assert_allclose(params["w"][i], ref["w"], rtol=1e-5, atol=1e-6)


def test_mesh_step_matches_vmapped_step_under_attack():
    """One worker per device (all_gather + NNA under shard_map) equals the vmapped form: each
    worker's gradient is its own (not the psum over workers of a replicated input's)."""
    n = 4
    mesh = Mesh(np.asarray(jax.devices()[:n]), ("data",))
    data = toy(n, seed=1)
    p0 = {"w": jnp.asarray(np.random.default_rng(2).normal(size=D), jnp.float32)}
    local = monna.local_optimizer(0.1, 0.5)
    algo = monna.MoNNA(lsq, local, mesh, f=1, kind="noise", scale=3.0)
    params, state = algo.init(p0)
    key = jax.random.key(3)
    params = jax.tree.map(lambda a: a + jnp.arange(n)[:, None] * 0.1, params)  # distinct models
    got, _, _ = algo.step(params, state, data, key)
    vmapped = jax.jit(lambda p, s, b, k: monna.step(lsq, local, p, s, b, 1, None, "noise", k, 3.0))
    want = vmapped(params, state, data, key)[0]
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-5, atol=1e-6)


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="beta"):
        monna.local_optimizer(0.1, 1.0)
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    with pytest.raises(UserError, match="honest majority"):
        monna.MoNNA(lsq, optax.sgd(0.1), mesh, f=2)
    with pytest.raises(UserError, match="attack"):
        monna.MoNNA(lsq, optax.sgd(0.1), mesh, f=1, kind="bogus")

"""WSN / SoftNet (Kang et al. 2022, 2023): the mask keeps exactly the top-c% scores; its
straight-through gradient is dL/d(w m) * w; with the used weights frozen, training a new task
leaves an earlier task's subnetwork w * m exactly unchanged (forget-free) while unused weights
move; SoftNet's mask is 1 on the top-c% and in [0, 1) elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.train import wsn

RNG = np.random.default_rng(0)
C = 0.5


def _f32(a):
    return jnp.asarray(a, jnp.float32)


PARAMS = {"kernel": _f32(RNG.normal(size=(5, 4))), "bias": _f32(RNG.normal(size=4))}
S1 = {"kernel": _f32(RNG.normal(size=(5, 4))), "bias": _f32(np.zeros(4))}
S2 = {"kernel": _f32(RNG.normal(size=(5, 4))), "bias": _f32(np.zeros(4))}
X, R = _f32(RNG.normal(size=(3, 5))), _f32(RNG.normal(size=(3, 4)))


def _loss(params, scores, target):
    p = wsn.masked(params, scores, C)
    return jnp.sum((X @ p["kernel"] + p["bias"]) * R) + jnp.sum((p["kernel"] - target) ** 2)


@jax.jit
def _run():
    mask1 = wsn.masks(S1, C)
    grad_s = jax.grad(lambda s: jnp.sum((X @ wsn.masked(PARAMS, s, C)["kernel"]) * R))(S1)
    used = wsn.accumulate(jax.tree.map(jnp.zeros_like, PARAMS), mask1)
    tx = optax.chain(wsn.freeze_used(used), optax.sgd(0.1))
    params, state = PARAMS, tx.init(PARAMS)
    for _ in range(3):  # task 2: its own scores, the used weights frozen
        g = jax.grad(_loss)(params, S2, 3.0)
        u, state = tx.update(g, state, params)
        params = optax.apply_updates(params, u)
    soft = wsn.soft_mask(S1["kernel"], C, jax.random.key(0))
    return mask1, grad_s, params, soft, wsn.masks(S2, C)["kernel"]


def test_mask_gradient_forget_free_and_softnet():
    mask1, grad_s, params, soft, k2 = jax.tree.map(np.asarray, _run())
    k = mask1["kernel"]
    assert k.sum() == 10 and set(np.unique(k)) == {0.0, 1.0}
    assert np.abs(S1["kernel"])[k == 1].min() > np.abs(S1["kernel"])[k == 0].max()
    assert (mask1["bias"] == 1).all()
    want = (np.asarray(X).T @ np.asarray(R)) * np.asarray(PARAMS["kernel"])
    np.testing.assert_allclose(grad_s["kernel"], want, rtol=1e-5, atol=1e-6)
    before = np.asarray(PARAMS["kernel"]) * k
    np.testing.assert_array_equal(params["kernel"] * k, before)  # task 1's subnetwork: unchanged
    np.testing.assert_array_equal(params["bias"], PARAMS["bias"])
    moved = np.abs(params["kernel"] - PARAMS["kernel"]) > 0
    assert ((k == 0) & (k2 == 1)).any()
    np.testing.assert_array_equal(moved, (k == 0) & (k2 == 1))  # free and in task 2's subnetwork
    assert (soft[k == 1] == 1).all() and (soft[k == 0] < 1).all() and (soft >= 0).all()

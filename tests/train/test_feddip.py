"""FedDIP (netlab/train/feddip.py): the sparsity and regulariser schedules, error feedback on a
hand-made case, and the reduction to FedAvg (sparsity 0, regulariser 0)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab.errors import UserError
from netlab.train import feddip


def test_schedules_reach_the_target_and_the_mask_realises_them_exactly():
    t_total, s_f = 30, 0.9
    s = [feddip.sparsity_at(t, t_total, s_f) for t in range(t_total + 2)]
    assert s[0] == 0.5 and s[t_total] == s_f and s[-1] == s_f
    assert all(a <= b for a, b in zip(s, s[1:]))
    # the authors' step function, transcribed: 20 pieces of T // 20 rounds, remainder to the last
    t_total, seg = 47, 20
    table = []
    for i in range(seg):
        lam = 0 if i == 0 else 5e-4 + (1e-3 - 5e-4) / (seg - 1) * (i - 1)
        table += [lam] * (t_total // seg) + ([lam] * (t_total % seg) if i == seg - 1 else [])
    np.testing.assert_allclose([feddip.lambda_at(t, t_total) for t in range(t_total)], table)
    # the realised sparsity of the global magnitude mask is round(s N) / N, ties included
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(5, 7)), jnp.float32).at[0].set(0.25),  # ties
        "w2": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "b": jnp.ones(7),  # 1-D: never pruned
    }
    levels = jnp.asarray([0.0, 0.3, 0.5, 0.77, s_f, 0.97])
    masks = jax.jit(jax.vmap(feddip.magnitude_mask, in_axes=(None, 0)))(params, levels)
    masks, params = jax.tree.map(np.asarray, (masks, params))
    for i, lv in enumerate(np.asarray(levels)):
        m = {k: v[i] for k, v in masks.items()}
        assert (m["w1"] == 0).sum() + (m["w2"] == 0).sum() == round(float(lv) * 47)
        np.testing.assert_allclose(feddip.realised_sparsity(m), round(float(lv) * 47) / 47)
        np.testing.assert_array_equal(m["b"], 1.0)
        kept = np.concatenate([np.abs(params[k])[m[k] > 0] for k in ("w1", "w2")])
        dropped = np.concatenate([np.abs(params[k])[m[k] == 0] for k in ("w1", "w2")])
        assert min(dropped.size, kept.size) == 0 or dropped.max() <= kept.min()


def test_error_feedback_pruned_weight_accumulates_and_regrows():
    """w = (3, 0.1), loss 0.5 |v - (0, 10)|^2, sparsity 1/2: the second weight is pruned, its
    gradient at the pruned point is -10 every step, so three SGD steps (lr 0.1) move the dense
    copy to 0.1 + 3 = 3.1 while the first decays to 3 * 0.9^3; the next mask keeps the second."""
    loss = lambda p, batch: 0.5 * jnp.sum((p["w"] - batch) ** 2)
    algo = feddip.FedDIP(loss, optax.sgd(0.1), 10, 0.5, 0.5, lam_max=0.0, lam_init=0.0)
    state = algo.init({"w": jnp.array([[3.0, 0.1]])})
    np.testing.assert_array_equal(state.mask["w"], [[1.0, 0.0]])
    batches = jnp.broadcast_to(jnp.array([[0.0, 10.0]]), (1, 3, 1, 2))  # 1 client, 3 steps
    state = algo.round(state, batches)
    np.testing.assert_allclose(state.params["w"], [[3 * 0.9**3, 3.1]], rtol=1e-6)
    np.testing.assert_array_equal(algo.final_mask(state)["w"], [[0.0, 1.0]])  # regrown


def test_sparsity_0_regulariser_0_is_fedavg():
    rng = np.random.default_rng(1)
    k, e, b, d = 3, 2, 4, 3
    params = {"w": jnp.asarray(rng.normal(size=(d, 2)), jnp.float32), "b": jnp.zeros(2)}
    x = rng.normal(size=(k, e, b, d)).astype(np.float32)
    batches = {"x": x, "y": rng.normal(size=(k, e, b, 2)).astype(np.float32)}
    sizes = np.array([1.0, 2.0, 5.0])

    def loss(p, batch):
        return jnp.mean((jnp.tanh(batch["x"] @ p["w"] + p["b"]) - batch["y"]) ** 2)

    local = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1))
    algo = feddip.FedDIP(loss, local, 4, 0.0, 0.0, lam_max=0.0, lam_init=0.0)
    state = algo.init(params)
    for _ in range(2):
        state = algo.round(state, batches, sizes)

    @jax.jit
    def fedavg(p):
        def client(cb):
            def step(c, batch):
                u, s = local.update(jax.grad(loss)(c[0], batch), c[1], c[0])
                return (optax.apply_updates(c[0], u), s), None

            return jax.lax.scan(step, (p, local.init(p)), cb)[0][0]

        out = jax.vmap(client)(batches)
        return jax.tree.map(lambda a: jnp.tensordot(sizes / sizes.sum(), a, axes=1), out)

    ref = fedavg(fedavg(params))
    for name in ("w", "b"):
        np.testing.assert_allclose(state.params[name], ref[name], rtol=1e-5, atol=1e-6)


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="final_sparsity"):
        feddip.FedDIP(lambda p, b: 0.0, optax.sgd(0.1), 10, 1.0)
    with pytest.raises(UserError, match="rounds"):
        feddip.FedDIP(lambda p, b: 0.0, optax.sgd(0.1), 0, 0.5)

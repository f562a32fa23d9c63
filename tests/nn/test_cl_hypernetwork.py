"""Continual learning with hypernetworks (von Oswald et al. 2020): the output regulariser (eq. 2)
and the chunked hypernetwork equal a numpy transcription, the regulariser and its gradient vanish
at Theta = Theta*, and in the split-digits task the first step of task 2 stores the finished
embedding, anchors Theta* to the current parameters and so adds exactly zero."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab import configlib
from netlab.classify.continual import ContinualDigits
from netlab.nn import cl_hypernetwork as clh

SIZES = (6, 5, 3)
RNG = np.random.default_rng(0)


def _np_hnet(p, e):
    chunks = p["chunk_embeddings"]
    h = np.concatenate([np.broadcast_to(e, (len(chunks), len(e))), chunks], -1)
    for name in ("fc0", "fc1"):
        h = np.maximum(h @ p[name]["kernel"] + p[name]["bias"], 0.0)
    return (h @ p["out"]["kernel"] + p["out"]["bias"]).reshape(-1)[: clh.num_weights(SIZES)]


def _np_mlp(flat, x):
    k1, flat = flat[:30].reshape(6, 5), flat[30:]
    b1, flat = flat[:5], flat[5:]
    k2, b2 = flat[:15].reshape(5, 3), flat[15:18]
    return np.maximum(x @ k1 + b1, 0.0) @ k2 + b2


def test_regulariser_and_hypernetwork_match_numpy_and_vanish_at_the_anchor():
    hnet = clh.TaskHyperNetwork(clh.num_weights(SIZES), hidden=(7, 7), chunk_size=8, chunk_dim=3)
    emb = RNG.normal(size=(4, 2)).astype(np.float32)
    theta = hnet.init(jax.random.key(0), emb[0])["params"]
    theta_star = jax.tree.map(lambda a: a + 0.1 * RNG.normal(size=a.shape).astype(a.dtype), theta)
    mask = np.array([1.0, 1.0, 0.0, 0.0], np.float32)  # task T = 3: tasks 1 and 2 are earlier

    def gen(t, e):
        return hnet.apply({"params": t}, e)

    @jax.jit
    def run(theta, theta_star, x):
        reg = lambda t: clh.output_regulariser(gen, t, theta_star, emb, mask, 0.01)  # noqa: E731
        same, grad = jax.value_and_grad(reg)(theta_star)
        w = gen(theta, emb[1])
        return reg(theta), same, grad, w, clh.mlp_apply(w, SIZES, x)

    x = RNG.normal(size=(4, 6)).astype(np.float32)
    reg, same, grad, w, out = run(theta, theta_star, x)
    np_theta = jax.tree.map(np.asarray, theta)
    np_star = jax.tree.map(np.asarray, theta_star)
    np.testing.assert_allclose(w, _np_hnet(np_theta, emb[1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, _np_mlp(np.asarray(w), x), rtol=1e-5, atol=1e-6)
    diffs = [np.sum((_np_hnet(np_star, e) - _np_hnet(np_theta, e)) ** 2) for e in emb[:2]]
    np.testing.assert_allclose(reg, 0.01 * sum(diffs) / 2, rtol=1e-5)
    assert reg > 0 and float(same) == 0.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad))


def test_task_boundary_anchors_and_stores():
    over = {
        "data.num_tasks": "2",
        "train.steps": "4",
        "train.batch_size": "8",
        "model.hidden": "(8,)",
        "model.target_hidden": "(4,)",
    }
    task = ContinualDigits(configlib.load("configs/classify_continual_digits.py:cpu", None, over))
    v = task.init_variables(jax.random.key(0))
    params, state = v["params"], {"continual": v["continual"]}
    params["hnet"] = jax.tree.map(lambda a: a + 0.5, params["hnet"])  # trained on task 0
    batch = task.train_batch(2)  # the first step of task 1
    assert int(batch["task"]) == 1 and bool(batch["first"])
    assert not bool(task.train_batch(3)["first"]) and int(task.train_batch(1)["task"]) == 0
    loss, (metrics, new) = jax.jit(task.loss_fn, static_argnums=4)(params, state, batch, None, True)
    assert float(metrics["output_reg"]) == 0.0
    np.testing.assert_array_equal(new["continual"]["stored"][0], params["emb"][0])
    for a, p in zip(jax.tree.leaves(new["continual"]["anchor"]), jax.tree.leaves(params["hnet"])):
        np.testing.assert_array_equal(a, p)
    assert np.isfinite(float(loss))

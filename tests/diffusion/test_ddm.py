"""Decentralized Diffusion Models: the exact ensemble identity, router sparsification, and the
task's isolation of the experts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from netlab import configlib
from netlab.data.kmeans import kmeans
from netlab.diffusion import ddm
from netlab.diffusion.oracle import GaussianMixture
from netlab.errors import UserError


def _log_density(means, stds, weights, x, logsnr):
    """log sum_j w_j N(x; alpha mu_j, alpha^2 s_j^2 + sigma^2), numpy float64."""
    alpha2 = 1 / (1 + np.exp(-logsnr))
    var = alpha2 * stds[None] ** 2 + (1 - alpha2)
    diff = x[:, None] - np.sqrt(alpha2) * means[None]
    logn = -0.5 * np.sum(diff**2 / var + np.log(2 * np.pi * var), axis=-1)
    return logsumexp(logn + np.log(weights)[None], axis=1)


def test_posterior_weighted_experts_equal_the_mixture_denoiser():
    """Partition a 6-component mixture by component into 3 unequal clusters: the exact expert
    denoisers weighted by the exact p(k | x_t) (with pi_k) are the exact whole-mixture denoiser."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(6, 3)) * 2
    stds = rng.uniform(0.2, 0.8, size=(6, 3))
    weights = np.array([0.05, 0.25, 0.1, 0.2, 0.3, 0.1])
    parts = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5])]
    whole = GaussianMixture(means, stds, weights)
    x = rng.normal(size=(64, 3)) * 2.5
    logsnrs = np.array([-6.0, -2.0, 0.0, 1.5, 4.0])
    pis = np.array([weights[p].sum() for p in parts])
    logpost = np.stack(
        [
            [np.log(pi) + _log_density(means[p], stds[p], weights[p] / pi, x, ls) for ls in logsnrs]
            for p, pi in zip(parts, pis)
        ],
        axis=-1,
    )  # (L, N, K)
    post = np.exp(logpost - logsumexp(logpost, axis=-1, keepdims=True))
    # a router without the cluster priors pi_k: wrong once the clusters are unequal
    flat = np.exp(logpost - np.log(pis))
    flat /= flat.sum(-1, keepdims=True)
    experts = [GaussianMixture(means[p], stds[p], weights[p] / weights[p].sum()) for p in parts]

    @jax.jit
    def run(x, logsnrs, post, flat):
        def one(ls, w, w_flat):
            out = jnp.stack([e.denoise(x, ls) for e in experts])
            return ddm.combine(w, out), ddm.combine(w_flat, out), whole.denoise(x, ls)

        return jax.vmap(one)(logsnrs, post, flat)

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    got, wrong, want = run(f32(x), f32(logsnrs), f32(post), f32(flat))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)
    assert np.abs(np.asarray(wrong) - np.asarray(want)).max() > 1e-3


def test_sparsify_top_k():
    w = np.asarray([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]], np.float32)
    out = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    got = jax.jit(
        lambda w: [ddm.sparsify(w, k) for k in range(4)] + [ddm.combine(ddm.sparsify(w, 1), out)]
    )(w)
    np.testing.assert_allclose(got[0], w)
    np.testing.assert_allclose(got[3], w)
    np.testing.assert_allclose(got[1], [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(got[2], [[0.625, 0, 0.375], [0, 2 / 3, 1 / 3]], 1e-6)
    np.testing.assert_allclose(got[4], out[[0, 1], [0, 1]])


def test_kmeans_is_deterministic_and_recovers_separated_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    lab = rng.integers(3, size=300)
    pts = centres[lab] + rng.normal(size=(300, 2)) * 0.3
    c1, a1 = kmeans(pts, 3, seed=4)
    c2, a2 = kmeans(pts, 3, seed=4)
    np.testing.assert_array_equal(a1, a2)
    # the clustering equals the true labels up to a relabelling
    assert len({(i, j) for i, j in zip(lab, a1)}) == 3
    assert pytest.approx(sorted(np.bincount(ddm.random_partition(10, 3)))) == [3, 3, 4]
    np.testing.assert_array_equal(c1, c2)


SMALL = {
    "model.width": "16",
    "model.depth": "1",
    "ddm.num_points": "256",
    "ddm.router_width": "16",
    "ddm.router_depth": "1",
    "train.batch_size": "32",
    "optimizer.warmup_steps": "1",
}


def test_toy_task_trains_and_no_expert_sees_another_partition():
    cfg = configlib.load("configs/diffusion/toy2d_ddm.py:cpu", overrides=SMALL)
    task, k = configlib.import_task(cfg), 4
    # every block of a batch holds rows of its own partition only
    batch = task.train_batch(0)
    members = [{tuple(p) for p in task.points[part]} for part in task.parts]
    for j, block in enumerate(np.split(batch["x"], k)):
        assert all(tuple(r) in members[j] for r in block)
    # block 2 replaced by other points of partition 2
    other = dict(batch, x=batch["x"].copy())
    rows = slice(2 * 8, 3 * 8)
    other["x"][rows] = task.points[task.parts[2][::-1][:8]]
    assert not np.array_equal(other["x"][rows], batch["x"][rows])

    def loss(p, b):
        return task.loss_fn(p, {}, b, jax.random.key(3), True)[0]

    @jax.jit  # one program: the gradients at both batches and the loss after one SGD step
    def run(pair):
        params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
        g = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, pair)
        g1 = jax.tree.map(lambda a: a[0], g)
        stepped = jax.tree.map(lambda a, d: jnp.stack([a, a - 1e-3 * d]), params, g1)
        return g, jax.vmap(loss, in_axes=(0, None))(stepped, batch)

    g, values = run(jax.tree.map(lambda *a: np.stack(a), batch, other))
    g1, g2 = jax.tree.map(lambda a: a[0], g), jax.tree.map(lambda a: a[1], g)
    assert np.all(np.isfinite(values)) and values[1] < values[0]  # a training step lowers it
    # expert j's gradient does not depend on block k != j: only expert 2's and the router's change
    for path, a in jax.tree_util.tree_leaves_with_path(g1["experts"]):
        b = _at(g2["experts"], path)
        same = [np.array_equal(a[j], b[j]) for j in range(k)]
        assert same == [True, True, False, True], (path, same)
    router_same = jax.tree.map(lambda a, b: np.array_equal(a, b), g1["router"], g2["router"])
    assert not all(jax.tree.leaves(router_same))


def _at(tree, path):
    for p in path:
        tree = tree[p.key]
    return np.asarray(tree)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"ddm.num_experts": "0"}, r"ddm.num_experts=0: expected an integer >= 1"),
        ({"ddm.num_experts": "3"}, r"train.batch_size=32: .* multiple of 3"),
        ({"ddm.partition": "kmean"}, r"ddm.partition='kmean': choose one of kmeans, random"),
        ({"ddm.top_k": "5"}, r"ddm.top_k=5: expected an integer in \[0, 4\]"),
        ({"ddm.num_points": "2"}, r"ddm.num_experts=4: more experts than the 2 training points"),
        ({"optimizer.clip_norm": "1.0"}, r"optimizer.clip_norm=1.0: .*set it to 0"),
    ],
)
def test_bad_ddm_config_is_a_one_line_user_error(overrides, match):
    cfg = configlib.load("configs/diffusion/toy2d_ddm.py:cpu", overrides=dict(SMALL, **overrides))
    with pytest.raises(UserError, match=match) as err:
        configlib.import_task(cfg)
    assert "\n" not in str(err.value)


def test_trainer_puts_one_expert_per_island():
    from netlab.train.trainer import Trainer

    cfg = configlib.load("configs/diffusion/toy2d_ddm.py:cpu", overrides=SMALL)
    cfg.mesh.island, cfg.mesh.data = 4, -1
    trainer = Trainer(cfg)  # the task owns the island axis: no DiLoCo islands block needed
    assert trainer.islands is None and trainer.mesh.shape["island"] == 4
    for leaf in jax.tree.leaves(trainer.abstract_state.params["experts"]):
        assert leaf.sharding.spec[0] == "island", leaf.sharding.spec

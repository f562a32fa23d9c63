"""DP-SGD (Abadi et al. 2016, Algorithm 1): per-example gradients equal one-example gradients; each
example's contribution to the summed, clipped gradient has norm at most C (exactly C when it was
clipped, its own gradient when not); the noise on the average has std sigma C / B."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.train import dpsgd

RNG = np.random.default_rng(0)
B, CLIP = 6, 1.0


def _loss(params, batch):
    pred = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((pred - batch["y"]) ** 2)


@jax.jit
def _clipping(params, batch):
    def summed(batch):  # B' * average, noise-free: the sum of the clipped per-example gradients
        grads = dpsgd.per_example_grads(_loss, params, batch)
        tx = dpsgd.aggregate(CLIP, 0.0, jax.random.key(0))
        avg, _ = tx.update(grads, tx.init(params), params)
        n = batch["x"].shape[0]
        return jax.tree.map(lambda a: a * n, avg)

    drop = np.array([[j for j in range(B) if j != i] for i in range(B)])
    leave_one_out = jax.vmap(summed)(jax.tree.map(lambda a: a[drop], batch))
    full = summed(batch)
    contributions = jax.tree.map(lambda f, l: f[None] - l, full, leave_one_out)
    one_by_one = jax.vmap(lambda e: jax.grad(_loss)(params, jax.tree.map(lambda a: a[None], e)))
    return contributions, dpsgd.per_example_grads(_loss, params, batch), one_by_one(batch)


def _norms(tree):
    """The global L2 norm of each example's gradient (leaves carry the batch axis first)."""
    leaves = [np.asarray(a).reshape(a.shape[0], -1) for a in jax.tree.leaves(tree)]
    return np.sqrt(sum((a.astype(np.float64) ** 2).sum(1) for a in leaves))


def test_each_example_contributes_at_most_the_clip_norm():
    params = {"w": RNG.normal(size=3).astype(np.float32), "b": np.float32(0.1)}
    scale = np.array([0.01, 0.02, 20.0, 40.0, 0.03, 80.0], np.float32)[:, None]  # 3 are clipped
    x = RNG.normal(size=(B, 3)).astype(np.float32) * scale
    residual = np.float32(0.1) * np.sign(RNG.normal(size=B)).astype(np.float32)
    batch = {"x": x, "y": x @ params["w"] + params["b"] + residual}
    contributions, per_example, reference = _clipping(params, batch)
    for a, b in zip(jax.tree.leaves(per_example), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    raw, contributed = _norms(per_example), _norms(contributions)
    assert (raw > CLIP).sum() == 3 and (raw < CLIP).sum() == 3  # both regimes are exercised
    assert contributed.max() <= CLIP * (1 + 1e-4)
    np.testing.assert_allclose(contributed[raw > CLIP], CLIP, rtol=1e-4)
    np.testing.assert_allclose(contributed[raw < CLIP], raw[raw < CLIP], rtol=1e-3, atol=1e-6)


def test_noise_on_the_average_has_std_sigma_c_over_b():
    sigma, n, dim = 2.0, 4, 20_000
    params = {"w": np.zeros(dim, np.float32)}
    grads = {
        "w": np.zeros((n, dim), np.float32)
    }  # zero gradients: the aggregate is the noise alone
    tx = dpsgd.aggregate(CLIP, sigma, jax.random.key(1))
    noise, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    want = dpsgd.noise_std(sigma, CLIP, n)
    assert want == 0.5
    assert abs(float(jnp.std(noise["w"])) / want - 1) < 0.03

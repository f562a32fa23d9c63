"""The error-propagation regulariser (netlab/diffusion/error_propagation.py): the bootstrapped
estimate equals a numpy transcription; with the exact Gaussian-mixture denoiser it is the
finite-sample MMD^2 floor, with a perturbed one far above it; in the task, weight 0 is the plain
loss bit for bit and a weight adds weight x the logged estimate."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion import error_propagation as ep
from netlab.diffusion import losses, schedules
from netlab.diffusion.oracle import GaussianMixture
from netlab.diffusion.task import Toy2D
from netlab.errors import UserError

SCHED = schedules.Schedule("cosine")


def _np_mmd2(x, y):
    z = np.concatenate([x.reshape(len(x), -1), y.reshape(len(y), -1)]).astype(np.float64)
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    k = sum(np.exp(-d2 / (d2.mean() * b)) for b in (0.25, 0.5, 1.0, 2.0, 4.0))
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def test_estimate_equals_a_numpy_transcription():
    """A linear denoiser x0_hat = 0.7 alpha x on a 3-step gap inside a 5-step chain (the last
    two steps repeat the tail): x_head, DDPM's ancestral steps (Ho et al. 2020, Eq. 6-7) and the
    5-kernel biased MMD^2 in float64 numpy, with the same normal draws."""
    rng = np.random.default_rng(0)
    x0_a, x0_b = rng.normal(size=(3, 2, 2)), rng.normal(size=(4, 2, 2))
    x0_a, x0_b = x0_a.astype(np.float32), x0_b.astype(np.float32)
    key, head, gap, kmax, T = jax.random.key(7), 400, 3, 5, 1000

    def denoise(x, lam):
        return 0.7 * jnp.sqrt(jax.nn.sigmoid(lam)) * x

    grid = ep.chain_grid(SCHED, jnp.int32(head), jnp.int32(gap), kmax, T)
    got = jax.jit(ep.estimate, static_argnums=0)(denoise, x0_a, x0_b, grid, key)

    lam = SCHED.logsnr(np.array([400, 399, 398, 397, 397, 397], np.float64) / T)
    np.testing.assert_allclose(np.asarray(grid), lam, rtol=1e-5)
    k_a, k_chain, k_b = jax.random.split(key, 3)
    normal = lambda k, s: np.asarray(jax.random.normal(k, s), np.float64)  # noqa: E731
    a, s = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
    x = a[0] * x0_a + s[0] * normal(k_a, x0_a.shape)
    for i, k in enumerate(jax.random.split(k_chain, kmax)):
        x0_hat = 0.7 * a[i] * x
        eps = (x - a[i] * x0_hat) / s[i]
        var = s[i + 1] ** 2 / s[i] ** 2 * (1 - a[i] ** 2 / a[i + 1] ** 2)
        x = a[i + 1] * x0_hat + np.sqrt(s[i + 1] ** 2 - var) * eps
        x = x + np.sqrt(var) * normal(k, x.shape)
    y = a[-1] * x0_b + s[-1] * normal(k_b, x0_b.shape)
    np.testing.assert_allclose(float(got), _np_mmd2(x, y), rtol=2e-4, atol=1e-6)


MIX = GaussianMixture(
    np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]),
    np.full((4, 2), 0.3),
    np.ones(4) / 4,
)


@jax.jit
def _oracle_cases(key):
    """(exact, perturbed, floor) on 2 x 512 mixture samples, head 8 of T = 20 (t 0.40 -> 0.15):
    the chain of the exact denoiser, of 0.8 x it, and two direct draws of q(x_tail) (the MMD^2
    floor of 512 samples). Coarse steps, so the perturbation shows within 5 steps; the exact
    denoiser's ancestral step still lacks the b^2 Var[x0 | x_t] part of the true reverse
    variance, so its estimate sits a little above the floor (about 1.5-3 x over seeds)."""
    n, kx, kest, kfloor = 512, *jax.random.split(key, 3)
    x0 = MIX.sample(kx, 2 * n)
    grid = ep.chain_grid(SCHED, jnp.int32(8), jnp.int32(5), 5, 20)
    exact = ep.estimate(MIX.denoise, x0[:n], x0[n:], grid, kest)
    pert = ep.estimate(lambda x, lam: 0.8 * MIX.denoise(x, lam), x0[:n], x0[n:], grid, kest)
    ka, kb = jax.random.split(kfloor)
    floor = ep.mmd2(
        ep.noised(x0[:n], grid[-1], jax.random.normal(ka, (n, 2))),
        ep.noised(x0[n:], grid[-1], jax.random.normal(kb, (n, 2))),
    )
    return exact, pert, floor


def test_exact_denoiser_is_at_the_sampling_floor_a_perturbed_one_is_not():
    exact, pert, floor = map(float, _oracle_cases(jax.random.key(0)))
    assert 0.0 <= exact < 3 * floor + 5e-3, (exact, floor)
    assert pert > 5 * max(exact, floor), (pert, exact, floor)


def _toy(weight):
    over = {"model.width": "16", "model.depth": "1", "train.batch_size": "16"}
    cfg = configlib.load("configs/diffusion/toy2d.py:cpu", overrides=over)
    with cfg.unlocked():  # toy2d does not declare the regulariser's keys (digits_dit does)
        cfg.diffusion.error_prop_weight, cfg.diffusion.error_prop_gap = weight, 1
    return Toy2D(cfg)


def test_task_weight_zero_is_the_plain_loss_and_a_weight_adds_the_estimate():
    plain, reg = _toy(0.0), _toy(0.5)
    params = nn.unbox(jax.jit(plain.init_variables)(jax.random.key(0)))["params"]
    batch, rng = plain.train_batch(0), jax.random.key(3)

    @jax.jit
    def run(params):
        x0, x_t, _, logsnr, labels, k_model = plain.noised(batch, rng)
        x0_hat, _, _ = plain._apply(params, x_t, logsnr, labels, k_model, True)
        ref, _ = losses.denoising_loss(x0_hat, x0, logsnr, "v", gamma=5.0)
        fn = functools.partial(plain.loss_fn, params, {}, batch, rng, train=True)
        (l0, (m0, _)), (l1, (m1, _)) = fn(), reg.loss_fn(params, {}, batch, rng, train=True)
        return ref, l0, m0, l1, m1

    ref, l0, m0, l1, m1 = jax.device_get(run(params))
    assert l0 == ref and "error_prop" not in m0  # bit for bit, not computed
    assert m1["error_prop"] > 0 and m1["x0_mse"] == m0["x0_mse"]
    assert l1 == pytest.approx(l0 + 0.5 * m1["error_prop"], rel=1e-6)
    with pytest.raises(UserError, match="diffusion.error_prop_gap"):
        cfg = reg.config.copy_and_resolve_references()
        with cfg.unlocked():
            cfg.diffusion.error_prop_gap = 0
        Toy2D(cfg)

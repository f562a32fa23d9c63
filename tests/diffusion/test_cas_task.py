"""Cas-DM wired as a task: its DDIM equals the generic DDIM when x0 is implied by eps, training lowers
the loss, evaluation reports both Frechet distances, and config mistakes are one-line errors."""  # noqa: E501

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion import cas_dm, samplers, schedules
from netlab.errors import UserError
from netlab.train.trainer import Trainer

SMALL = {
    "model.depth": "1",
    "model.width": "32",
    "model.num_heads": "2",
    "train.batch_size": "16",
    "eval.num_samples": "20",
    "diffusion.sample_steps": "4",
    "cas_dm.x0_depth": "1",
}


def test_cas_ddim_with_eps_implied_x0_is_generic_ddim():
    grid = jnp.asarray(
        schedules.sampling_grid(schedules.Schedule("cosine"), 6, "uniform_logsnr"), jnp.float32
    )
    x_T = jax.random.normal(jax.random.key(0), (5, 3))
    eps_net = lambda x, logsnr: jnp.tanh(x * (1 + 0.1 * logsnr))  # any smooth "network"

    def pair(x, logsnr):
        alpha, sigma = schedules.alpha_sigma(logsnr)
        e = eps_net(x, logsnr)
        return e, (x - sigma * e) / alpha

    def denoise(x, logsnr):
        return pair(x, logsnr)[1]

    ours = cas_dm.sample_ddim(pair, x_T, grid)
    generic = samplers.sample(denoise, x_T, grid, "ddim", key=jax.random.key(1))
    np.testing.assert_allclose(ours, generic, rtol=1e-4, atol=1e-4)


def test_perfect_pair_for_a_point_mass_lands_on_it():
    c = jnp.array([0.3, -0.7])
    grid = jnp.asarray(
        schedules.sampling_grid(schedules.Schedule("cosine"), 3, "uniform_logsnr"), jnp.float32
    )

    def pair(x, logsnr):
        alpha, sigma = schedules.alpha_sigma(logsnr)
        return (x - alpha * c) / sigma, jnp.broadcast_to(c, x.shape)

    out = cas_dm.sample_ddim(pair, jax.random.normal(jax.random.key(0), (4, 2)), grid)
    np.testing.assert_allclose(out, jnp.broadcast_to(c, (4, 2)), atol=1e-5)


def test_training_lowers_the_loss_and_evaluation_reports_both_distances(tmp_path, fast_digits_fd):
    cfg = configlib.load(
        "configs/diffusion/digits_casdm.py:cpu",
        overrides=dict(SMALL, **{"train.steps": "60", "optimizer.warmup_steps": "10"}),
    )
    trainer = Trainer(cfg, devices=jax.devices()[:1])
    held = (  # 4 batches and keys, stacked: the jitted loss maps one copy of loss_fn
        jax.tree.map(lambda *b: np.stack(b), *[trainer.global_batch(10_000 + i) for i in range(4)]),
        jax.vmap(jax.random.key)(jnp.arange(4)),
    )

    @jax.jit  # one program for the held-out loss (eager calls re-trace op by op)
    def loss(params):
        per_batch = lambda bk: trainer.task.loss_fn(params, {}, bk[0], bk[1], True)[0]
        return jnp.mean(jax.lax.map(per_batch, held))

    state = trainer.init_state()
    initial = loss(state.params)
    for step in range(60):
        state, metrics = trainer.train_step(state, trainer.global_batch(step))
    assert loss(state.params) < 0.8 * initial
    assert {"eps_mse", "x0_mse", "metric"} <= set(metrics)
    scalars, images = trainer.task.evaluate(state.params, {}, 60, str(tmp_path))
    assert {"digits_fd", "digits_fd_eps_only", "digits_fd_real_floor"} <= set(scalars)
    assert all(np.isfinite(v) for v in scalars.values())
    assert images["samples"].dtype == np.uint8


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"cas_dm.metric": "lpipz"}, "choose one of ssim, lpips, none"),
        ({"cas_dm.metric": "lpips"}, "cas_dm.lpips_weights"),
    ],
)
def test_bad_metric_settings_are_one_line_errors(overrides, match):
    cfg = configlib.load(
        "configs/diffusion/digits_casdm.py:cpu", overrides=dict(SMALL, **overrides)
    )
    with pytest.raises(UserError, match=match):
        Trainer(cfg, devices=jax.devices()[:1])

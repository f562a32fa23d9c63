"""U-ViT and simple diffusion (netlab/diffusion/uvit.py, simple_diffusion.py): the multiscale loss
against a numpy transcription of the paper's sum, dropout only in the low-resolution blocks,
conditioning, one gradient step. One jitted call; random weights (scaled normal), so the zero
initialisations (adaLN-Zero gates, output conv) hide nothing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.diffusion import losses, simple_diffusion
from netlab.diffusion.task import DigitsDiffusion, build_backbone
from netlab.diffusion.uvit import UViT
from netlab.errors import UserError
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, width=32, channel_mult=(1,), num_res_blocks=1)
KW.update(vit_width=16, depth=1, num_heads=2, num_classes=3, dropout=0.5)
B = 3
X = np.random.default_rng(0).normal(size=(B, 8, 8, 1)).astype(np.float32)
T, Y = np.array([-30.0, 0.0, 40.0], np.float32), np.array([0, 1, 3])


def _apply(p, x, t, y, train=False):
    return UViT(**KW).apply(
        p, x, t, y, train, rngs={"dropout": jax.random.key(5)}, capture_intermediates=True
    )


@jax.jit
def _run(p):
    xs, ts, ys = (
        np.concatenate([X] * 3),
        np.concatenate([T, T, T + 7]),
        np.concatenate([Y, Y + 1, Y]),
    )
    out, base = _apply(p, xs, ts, ys % 4)
    res = {"base": out[:B], "label": out[B : 2 * B], "noise": out[2 * B :]}
    res["train"], drop = _apply(p, xs, ts, ys % 4, train=True)  # dropout 0.5
    res["inter_eval"], res["inter_drop"] = base["intermediates"], drop["intermediates"]
    # one SGD step on a fixed batch of the x0 loss lowers it
    target = np.tanh(X)

    def loss(q):
        return jnp.mean((_apply(q, X, T, Y)[0] - target) ** 2)

    val, grad = jax.value_and_grad(loss)(p)
    step = 1e-2 / optax.tree.norm(grad)  # a short step along the gradient
    res["loss0"], res["loss1"] = val, loss(jax.tree.map(lambda a, g: a - step * g, p, grad))
    return res


@pytest.fixture(scope="module")
def res():
    shapes = nn.unbox(jax.eval_shape(lambda k: UViT(**KW).init(k, X, T, Y), jax.random.key(0)))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    return jax.device_get(_run(params))


def test_shapes_conditioning_and_one_step(res):
    assert res["base"].shape == (B, 8, 8, 1)
    for case in ("label", "noise"):
        assert np.abs(res[case] - res["base"]).max() > 1e-3, case
    assert float(res["loss1"]) < float(res["loss0"])


def test_dropout_acts_only_in_the_low_resolution_blocks(res):
    """Training with dropout 0.5 vs evaluation: the high-resolution encoder activations are
    bit-identical, the Transformer blocks' differ (and so does the output)."""
    ev, drop = res["inter_eval"], res["inter_drop"]
    for name in ("conv_in", "down0_0", "down0_pool"):
        np.testing.assert_array_equal(drop[name]["__call__"][0], ev[name]["__call__"][0])
    assert np.abs(drop["vit0"]["__call__"][0] - ev["vit0"]["__call__"][0]).max() > 1e-3
    assert np.abs(res["train"][:B] - res["base"]).max() > 1e-3


def test_multiscale_loss_is_the_papers_sum_and_one_scale_is_the_plain_loss():
    rng = np.random.default_rng(2)
    x0, x0_hat = rng.normal(size=(2, 3, 8, 8, 2)).astype(np.float32)
    logsnr = np.array([-2.0, 0.5, 3.0], np.float32)
    plain, one, got = jax.jit(
        lambda a, b, ls: (
            losses.denoising_loss(a, b, ls, "v"),
            simple_diffusion.multiscale_loss(a, b, ls, (8,), "v"),
            simple_diffusion.multiscale_loss(a, b, ls, (8, 4, 2), "v")[0],
        )
    )(x0_hat, x0, logsnr)
    np.testing.assert_allclose(one, plain, rtol=1e-6)
    # numpy: sum_s (1/s) (1/s^2) ||D_s r||^2 per channel, times d = 8 (see the module docstring)
    r = (x0_hat - x0).astype(np.float64)
    ref = 0.0
    for s in (8, 4, 2):
        k = 8 // s
        pooled = r.reshape(3, s, k, s, k, 2).mean(axis=(2, 4))
        ref = ref + 8 / s * (pooled**2).sum(axis=(1, 2, 3)) / (s * s * 2)
    w = 1 + np.exp(logsnr.astype(np.float64))
    np.testing.assert_allclose(float(got), (w * ref).mean(), rtol=1e-5)


def test_config_builds_uvit_with_the_shifted_schedule_and_rejects_bad_values():
    cfg = configlib.load("configs/diffusion/digits_uvit.py:backbone=uvit")
    assert cfg.diffusion.schedule == "cosine_shifted"
    assert cfg.diffusion.shift == pytest.approx(2 * np.log(64 / 8))
    model = build_backbone(cfg.model, (8, 8, 1), 10, Policy())
    assert isinstance(model, UViT) and model.dropout == 0.1 and model.channel_mult == (1,)
    with pytest.raises(UserError, match="model.channel_mult"):
        over = {"model.channel_mult": "(1, 1, 1, 1)"}
        build_backbone(configlib.load(cfg_path(), overrides=over).model, (8, 8, 1), 10, Policy())
    with pytest.raises(UserError, match="diffusion.multiscale"):
        DigitsDiffusion(configlib.load(cfg_path(), overrides={"diffusion.multiscale": "(3,)"}))


def cfg_path():
    return "configs/diffusion/digits_uvit.py:backbone=uvit"

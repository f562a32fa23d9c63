"""EDM2's magnitude-preserving U-Net (Karras et al. 2024, config G): unit-magnitude blocks at any
stored-weight scale (forced weight normalisation), the zero-initialised output gain, conditioning
paths, and one step of EDM2's optimizer (Adam + inverse-square-root decay + forced weight norm,
from the digits_edm2 config) lowering the loss on a fixed batch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.diffusion import mp_layers as mp
from netlab.diffusion.edm2_unet import Block, EDM2UNet
from netlab.diffusion.task import DigitsDiffusion
from netlab.errors import UserError
from netlab.train import optim

SCALES = (1.0, 0.5, 1e3)  # stored-weight scales (forced normalisation: all give one forward)


def _scale_weights(params, s):
    return jax.tree_util.tree_map_with_path(
        lambda p, w: w * s if getattr(p[-1], "key", None) == mp.WEIGHT else w, params
    )


def test_blocks_keep_unit_magnitude_at_any_weight_scale():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 8, 8, 16)), jnp.float32)
    emb = jnp.asarray(rng.standard_normal((16, 32)), jnp.float32)
    blocks = {  # encoder with cosine attention, decoder with a 1x1 skip, downsampling encoder
        "enc_attn": Block(16, "enc", attention=True, channels_per_head=8),
        "dec_skip": Block(24, "dec"),
        "enc_down": Block(24, "enc", "down"),
    }

    @jax.jit
    def run(key):
        res = {}
        for name, blk in blocks.items():
            v = nn.unbox(blk.init(key, x, emb))
            v["params"]["emb_gain"] = jnp.float32(0.5)  # let the embedding path act too
            res[name] = jax.vmap(lambda s: blk.apply(_scale_weights(v, s), x, emb))(
                jnp.asarray(SCALES)
            )
        return res

    for name, outs in jax.device_get(run(jax.random.key(1))).items():
        for y in outs:
            # Unit RMS in -> unit RMS out up to the zero padding of the 3x3 convs at the border
            # and the non-zero mean of mp_silu (EDM2 preserves magnitude in expectation only).
            assert 0.85 < float(np.sqrt(np.mean(np.square(y)))) < 1.15, name
        for y in outs[1:]:  # forced weight normalisation: the stored scale does not matter
            np.testing.assert_allclose(y, outs[0], atol=2e-3, err_msg=name)


def test_unet_output_starts_at_zero_and_reads_its_conditioning():
    model = EDM2UNet(
        image_size=8,
        channels=2,
        width=8,
        channel_mult=(1, 2),
        num_blocks=1,
        attention_resolutions=(4,),
        channels_per_head=8,
        num_classes=3,
        learn_logvar=True,
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 8, 8, 2)), jnp.float32)
    t = jnp.asarray([-100.0, -20.0, 30.0, 90.0])  # the task's noise_cond = 100 ln(sigma) / 4
    y = jnp.asarray([0, 1, 2, 3], jnp.int32)  # 3 = the null label (all-zero one-hot)

    # One batch of 16 rows: the 4 inputs, relabelled to class 0, with the noise levels
    # reversed, and the whole batch reversed (examples must not see each other).
    xs = jnp.concatenate([x, x, x, x[::-1]])
    ts = jnp.concatenate([t, t, t[::-1], t[::-1]])
    ys = jnp.concatenate([y, jnp.zeros_like(y), y, y[::-1]])

    @jax.jit
    def run(key):
        params = nn.unbox(model.init(key, x, t, y))["params"]
        init_gains = params["out_gain"], params["dec4_in0"]["emb_gain"]
        # Open the zero-initialised gains so the output and the embedding path act.
        params = jax.tree_util.tree_map_with_path(
            lambda p, w: jnp.ones_like(w) if p[-1].key in ("out_gain", "emb_gain") else w, params
        )
        return init_gains, model.apply({"params": params}, xs, ts, ys)

    (out_gain, emb_gain), (out, logvar) = jax.device_get(run(jax.random.key(2)))
    assert out_gain == 0 and emb_gain == 0  # EDM2's two zero-initialised gains: F = 0 at init
    assert out.shape == (16, 8, 8, 2) and logvar.shape == (16,)
    assert np.all(np.isfinite(logvar)) and np.ptp(logvar[:4]) > 1e-3  # u(sigma) reads sigma
    base, relabelled, renoised, flipped = out.reshape(4, 4, 8, 8, 2)
    assert 0.2 < float(np.sqrt(np.mean(base**2))) < 5  # unit-scale output at gain 1
    diff = lambda a: np.abs(a - base).reshape(4, -1).max(axis=1)  # noqa: E731
    assert diff(relabelled)[0] < 1e-5 and np.all(diff(relabelled)[1:] > 1e-4)  # class changes it
    assert np.all(diff(renoised) > 1e-4)  # the noise level changes it
    np.testing.assert_allclose(flipped[::-1], base, rtol=1e-5, atol=1e-5)


def test_one_edm2_optimizer_step_lowers_the_loss_and_keeps_unit_weights():
    over = {
        "model.width": "8",
        "model.channel_mult": "(1,)",  # one level keeps the compile short; the step is the same
        "model.num_blocks": "1",
        "model.channels_per_head": "8",
        "train.batch_size": "16",
        "optimizer.warmup_steps": "0",  # a full-size first step
    }
    cfg = configlib.load("configs/diffusion/digits_edm2.py:backbone=edm2_unet", overrides=over)
    assert cfg.optimizer.schedule == "inv_sqrt" and cfg.optimizer.forced_weight_norm
    task = DigitsDiffusion(cfg)
    tx = optim.build(cfg.optimizer, int(cfg.train.steps))
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))

    @jax.jit
    def step(key):
        params = nn.unbox(task.init_variables(key))["params"]
        # Stored weights at an arbitrary scale: the projection brings them back to unit rows.
        params = _scale_weights(params, 3.0)

        def loss(p):
            return task.loss_fn(p, {}, batch, jax.random.key(5), True)[0]

        before, grads = jax.value_and_grad(loss)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        return before, loss(new), new

    before, after, new = jax.device_get(step(jax.random.key(0)))
    assert after < before, (before, after)
    for path, w in jax.tree_util.tree_flatten_with_path(new)[0]:
        if getattr(path[-1], "key", None) == mp.WEIGHT:
            rms = np.sqrt(np.mean(np.square(w), axis=tuple(range(w.ndim - 1))))
            np.testing.assert_allclose(rms, 1.0, atol=1e-3, err_msg=jax.tree_util.keystr(path))


def test_digits_edm2_defaults_to_the_unet_and_pipeline_needs_dit():
    """The default backbone (set by the same-recipe rows of bench/diffusion_backbones.py)."""
    path = "configs/diffusion/digits_edm2.py"
    cfg = configlib.load(f"{path}:cpu")
    assert cfg.model.backbone == "edm2_unet" and cfg.optimizer.forced_weight_norm
    assert configlib.load(f"{path}:backbone=dit,pipeline").mesh.stage == 4
    with pytest.raises(UserError, match="backbone=dit,pipeline"):
        configlib.load(f"{path}:pipeline")

"""DiC (netlab/diffusion/dic.py): pixel (un)shuffle, the sparse skips, stage-specific embeddings,
conditioning, one gradient step. One jitted call; random weights (scaled normal)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.diffusion.dic import DiC, pixel_shuffle, pixel_unshuffle, skip_slots
from netlab.diffusion.task import build_backbone
from netlab.errors import UserError
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, width=8, depths=(1, 1, 1, 1, 1), num_classes=3)
B = 3
X = np.random.default_rng(0).normal(size=(B, 8, 8, 1)).astype(np.float32)
T, Y = np.array([-30.0, 0.0, 40.0], np.float32), np.array([0, 1, 3])


def _apply(p, x, t, y):
    return DiC(**KW).apply(p, x, t, y)


@jax.jit
def _run(p):
    xs, ts = np.concatenate([X] * 4), np.concatenate([T, T, T + 7, T])
    ys = np.concatenate([Y, Y + 1, Y, Y]) % 4
    out = _apply(p, xs, ts, ys)
    res = {"base": out[:B], "label": out[B : 2 * B], "noise": out[2 * B : 3 * B]}
    target = np.tanh(X)

    def loss(q):
        return jnp.mean((_apply(q, X, T, Y) - target) ** 2)

    val, grad = jax.value_and_grad(loss)(p)
    step = 1e-2 / optax.tree.norm(grad)  # a short step along the gradient
    res["loss0"], res["loss1"] = val, loss(jax.tree.map(lambda a, g: a - step * g, p, grad))
    res["grad"] = grad["params"]
    return res


@pytest.fixture(scope="module")
def setup():
    shapes = nn.unbox(jax.eval_shape(lambda k: DiC(**KW).init(k, X, T, Y), jax.random.key(0)))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    deep = DiC(**dict(KW, depths=(4, 1, 1, 1, 4)))  # shapes only, not compiled
    deep_shapes = nn.unbox(jax.eval_shape(lambda k: deep.init(k, X, T, Y), jax.random.key(0)))
    return deep_shapes["params"], jax.device_get(_run(params))


def test_shapes_conditioning_and_one_step(setup):
    _, res = setup
    assert res["base"].shape == (B, 8, 8, 1)
    for case in ("label", "noise"):
        assert np.abs(res[case] - res["base"]).max() > 1e-3, case
    assert float(res["loss1"]) < float(res["loss0"])


def test_stage_specific_embeddings(setup):
    """Every level's own timestep MLP and class table reach the loss; class rows of labels not in
    the batch (label 2) get no gradient."""
    _, res = setup
    for lvl in range(3):
        g = res["grad"]
        assert np.abs(g[f"t_embed{lvl}"]["fc1"]["kernel"]).max() > 0, lvl
        table = np.abs(g[f"label_embed{lvl}"]).max(1)
        assert table[2] == 0 and min(table[[0, 1, 3]]) > 0, (lvl, table)


def test_sparse_skips_one_every_three_blocks(setup):
    """Level 0 has 4 encoder / 4 decoder blocks: the encoder stores blocks 0 and 3, the decoder
    concatenates at blocks 0 and 3 (last stored first), so only they see 2C input channels."""
    params, _ = setup
    assert skip_slots(4, True) == [0, 3] and skip_slots(4, False) == [0, 3]
    assert skip_slots(7, True) == [0, 3, 6] and skip_slots(2, True) == [1]
    for i in range(4):
        cin = params[f"stage4_{i}"]["conv0"]["kernel"].shape[2]
        assert cin == (16 if i in (0, 3) else 8), (i, cin)
    assert params["stage3_0"]["conv0"]["kernel"].shape[2] == 32  # level 1: 16 + 16
    assert "stage2_0" in params and params["stage2_0"]["conv1"]["kernel"].shape[3] == 32


def test_pixel_shuffle_inverts_unshuffle():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    y = pixel_unshuffle(x)
    assert y.shape == (2, 2, 3, 12)
    np.testing.assert_array_equal(y[0, 0, 0], x[0, :2, :2].reshape(-1))  # one 2 x 2 block
    np.testing.assert_array_equal(pixel_shuffle(y), x)


def test_config_builds_dic_and_rejects_bad_values():
    path = "configs/diffusion/digits_uvit.py:backbone=dic"
    model = build_backbone(configlib.load(path).model, (8, 8, 1), 10, Policy())
    assert isinstance(model, DiC) and model.depths == (2, 2, 2, 2, 2)
    with pytest.raises(UserError, match="model.dic_depths"):
        over = {"model.dic_depths": "(4, 2, 2, 2, 2)"}
        build_backbone(configlib.load(path, overrides=over).model, (8, 8, 1), 10, Policy())

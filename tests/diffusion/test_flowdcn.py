"""FlowDCN (netlab/diffusion/flowdcn.py): the multi-scale receptive field, any resolution,
conditioning (a training step is the registry walk's). One jitted call; random weights except the
zero-initialised offset and scale layers, so the two groups sample fixed 3 x 3 grids at dilations
max_scale ((g + 1)/2 - 1e-4), about 1 and 2."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion.flowdcn import FlowDCN
from netlab.diffusion.task import build_backbone
from netlab.errors import UserError
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, patch=1, width=8, depth=1, groups=2, max_scale=2.0)
KW.update(num_classes=3)
B = 3
X = np.random.default_rng(0).normal(size=(B, 8, 8, 1)).astype(np.float32)
T, Y = np.array([-30.0, 0.0, 40.0], np.float32), np.array([0, 1, 3])


def _apply(p, x, t, y):
    return FlowDCN(**KW).apply(p, x, t, y)


@jax.jit
def _run(p):
    # one batch: the three examples, with other labels, at other noise levels, and example 0 with
    # each of its 64 pixels in turn raised by 1 (which input pixels can reach out[0, 4, 4]?)
    poked = X[0] + np.eye(64, dtype=np.float32).reshape(64, 8, 8, 1)
    xs = np.concatenate([X, X, X, poked])
    ts = np.concatenate([T, T, T + 7, np.full(64, T[0])])
    ys = np.concatenate([Y, Y + 1, Y, np.full(64, Y[0])]) % 4
    out = _apply(p, xs, ts, ys)
    res = {"base": out[:B], "label": out[B : 2 * B], "noise": out[2 * B : 3 * B]}
    res["reach"] = (out[3 * B :, 4, 4, 0] - out[0, 4, 4, 0]).reshape(8, 8)
    res["wide"] = _apply(p, np.ones((1, 6, 10, 1), np.float32), T[:1], Y[:1])

    return res


@pytest.fixture(scope="module")
def res():
    shapes = nn.unbox(jax.eval_shape(lambda k: FlowDCN(**KW).init(k, X, T, Y), jax.random.key(0)))
    rng = np.random.default_rng(1)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if "'offset'" in name or "'scale'" in name:  # zero offsets, the prior scales
            return np.zeros(s.shape, np.float32)
        return 0.3 * rng.normal(size=s.shape).astype(np.float32)

    return jax.device_get(_run(jax.tree_util.tree_map_with_path(draw, shapes)))


def test_receptive_field_is_the_largest_groups_dilated_window(res):
    """Group 1 samples at dilation 2 (1 - 1e-4): the 5 x 5 window around the pixel, and no
    further (everything else in the block is per token, and there is no attention)."""
    reach = np.abs(res["reach"])
    dist = np.maximum(*np.abs(np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij")) - 4))
    assert np.all(reach[dist > 2] == 0)
    assert np.all(reach[dist <= 1] > 0)
    assert reach[2, 4] > 1e-3 and reach[4, 6] > 1e-3  # two pixels away: only the wide group


def test_any_resolution_and_conditioning(res):
    assert res["wide"].shape == (1, 6, 10, 1) and np.all(np.isfinite(res["wide"]))
    for case in ("label", "noise"):
        assert np.abs(res[case] - res["base"]).max() > 1e-3, case


def test_config_is_a_flow_model_and_bad_values_are_refused():
    cfg = configlib.load("configs/diffusion/digits_rin.py:backbone=flowdcn")
    assert cfg.diffusion.parameterization == "flow" and cfg.diffusion.weighting == "flow"
    model = build_backbone(cfg.model, (8, 8, 1), 10, Policy())
    assert isinstance(model, FlowDCN) and model.groups == 4 and model.max_scale == 2.0
    with cfg.unlocked():
        cfg.model.dcn_groups = 3
    with pytest.raises(UserError, match="model.dcn_groups"):
        build_backbone(cfg.model, (8, 8, 1), 10, Policy())

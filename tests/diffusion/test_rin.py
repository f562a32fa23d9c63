"""RIN (netlab/diffusion/rin.py): latent self-conditioning, slot symmetry, conditioning, one step.

One jitted call returns every quantity; the weights are random (scaled normal), so the zero-gain
self-conditioning LayerNorm and the zero output layer of the initialisation do not hide anything.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion.rin import RIN
from netlab.diffusion.task import build_backbone
from netlab.errors import UserError
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, patch=4, width=16, interface_width=8, num_latents=3)
KW.update(depth=1, compute_depth=1, num_heads=2, num_classes=3)
B = 6
X = np.random.default_rng(0).normal(size=(B, 8, 8, 1)).astype(np.float32)
T, Y = np.linspace(-50, 50, B).astype(np.float32), np.arange(B) % 4


def _apply(p, x, t, y, train=False, key=0, **kw):
    return RIN(**KW, **kw).apply(p, x, t, y, train, rngs={"dropout": jax.random.key(key)})


@jax.jit
def _run(p):
    perm = jax.tree_util.tree_map_with_path(  # the latent slots in reverse order
        lambda path, v: v[::-1] if "latents" in jax.tree_util.keystr(path) else v, p
    )
    x3, t3, y3 = (
        np.concatenate([X] * 3),
        np.concatenate([T, T, T + 7]),
        np.concatenate([Y, Y + 1, Y]),
    )
    one = jax.vmap(lambda q: _apply(q, x3, t3, y3 % 4, eval_passes=1))(
        jax.tree.map(lambda a, b: jnp.stack([a, b]), p, perm)
    )
    return {
        "eval1": one[0, :B],
        "label": one[0, B : 2 * B],
        "noise": one[0, 2 * B :],
        "permuted": one[1, :B],
        "eval2": _apply(p, X, T, Y, eval_passes=2),
        "train": _apply(p, X, T, Y, True, self_cond=0.5),
    }


@pytest.fixture(scope="module")
def res():
    shapes = nn.unbox(jax.eval_shape(lambda k: RIN(**KW).init(k, X, T, Y), jax.random.key(0)))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    return jax.device_get(_run(params))


def test_self_conditioning_in_training_and_sampling(res):
    """Training at rate 0.5: each example is either the two-pass sampling computation (first pass
    kept) or the one-pass one (zero latents), and both cases occur; the fed-back latents matter."""
    assert res["eval2"].shape == (B, 8, 8, 1)
    assert np.abs(res["eval2"] - res["eval1"]).max() > 1e-2
    err = lambda a: np.abs(res["train"] - a).reshape(B, -1).max(1)  # noqa: E731
    kept, dropped = err(res["eval2"]) < 1e-5, err(res["eval1"]) < 1e-5
    assert np.all(kept ^ dropped) and kept.any() and dropped.any()


def test_latent_slots_are_exchangeable_and_conditioning_matters(res):
    np.testing.assert_allclose(res["permuted"], res["eval1"], atol=1e-5)
    for case in ("label", "noise"):
        assert np.abs(res[case] - res["eval1"]).max() > 1e-3, case


def test_config_builds_rin_and_rejects_bad_values():
    cfg = configlib.load("configs/diffusion/digits_rin.py:backbone=rin")
    model = build_backbone(cfg.model, (8, 8, 1), 10, Policy())
    assert isinstance(model, RIN) and model.eval_passes == 2 and model.self_cond == 0.9
    with cfg.unlocked():
        cfg.model.rin_self_cond = 1.5
    with pytest.raises(UserError, match="model.rin_self_cond"):
        build_backbone(cfg.model, (8, 8, 1), 10, Policy())

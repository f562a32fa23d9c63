"""AdamP / SGDP (Heo et al. 2021): for a scale-invariant weight the update is orthogonal to the
weight (plus exactly the reduced weight decay); where the cosine test fails AdamP is optax.adam and
SGDP is optax.sgd; the channel-wise view is tried before the whole-tensor view. One jitted call per
test."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab.errors import UserError
from netlab.train import adamp, optim, validate
from tests.train.helpers import tiny_config

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 5)).astype(np.float32)
T = RNG.normal(size=(16, 3)).astype(np.float32)


def _scale_invariant_loss(w):
    """x @ w followed by a per-channel normalisation (BatchNorm without affine): the loss does not
    change when a column (output channel) of w is scaled."""
    h = X @ w
    h = (h - h.mean(0)) / jnp.sqrt(h.var(0) + 1e-12)
    return jnp.sum(T * jnp.tanh(h))


def _run(tx, w, steps):
    def step(carry, _):
        w, state = carry
        g = jax.grad(_scale_invariant_loss)(w)
        u, state = tx.update(g, state, w)
        dots = jnp.sum(u * w, axis=0)  # one radial component per output channel
        return (w + u, state), (dots, jnp.linalg.norm(u, axis=0) * jnp.linalg.norm(w, axis=0))

    (_, _), out = jax.lax.scan(step, (w, tx.init(w)), None, length=steps)
    return out


@jax.jit
def _orthogonality(w):
    lr, wd = 0.01, 0.5
    return (
        _run(adamp.adamp(lr), w, 3),
        _run(adamp.sgdp(lr, momentum=0.9), w, 3),
        _run(optax.adam(lr), w, 3),
        _run(adamp.adamp(lr, weight_decay=wd, wd_ratio=0.1), w, 1)[0],
        -lr * wd * 0.1 * jnp.sum(w * w, axis=0),
    )


def test_update_is_orthogonal_for_a_scale_invariant_weight():
    w = RNG.normal(size=(5, 3)).astype(np.float32)
    (a_dot, a_scale), (s_dot, s_scale), (adam_dot, adam_scale), decayed, want = _orthogonality(w)
    assert np.abs(a_dot / a_scale).max() < 1e-5  # cos(update, w) per channel, every step
    assert np.abs(s_dot / s_scale).max() < 1e-5
    assert np.abs(adam_dot / adam_scale).max() > 1e-2  # Adam itself has a radial component
    # weight decay survives the projection, scaled by wd_ratio: <u, w_c> = -lr wd ratio |w_c|^2
    np.testing.assert_allclose(decayed[0], want, rtol=1e-4)


@jax.jit
def _against_optax(params):
    def loss(p):  # the gradient is parallel to w (cos = 1): no projection
        return 0.5 * jnp.sum((p["w"] + 2.0 * params["w"]) ** 2) + jnp.sum(p["b"] ** 2)

    def run(tx):
        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, tx.init(params)), None, length=5)[0][0]

    kw = dict(b1=0.8, b2=0.99, eps=1e-6)
    return [
        (run(adamp.adamp(0.1, **kw)), run(optax.adam(0.1, **kw))),
        (run(adamp.adamp(0.1, nesterov=True)), run(optax.adam(0.1, nesterov=True))),
        (run(adamp.sgdp(0.05, momentum=0.9)), run(optax.sgd(0.05, momentum=0.9))),
        (
            run(adamp.sgdp(0.05, momentum=0.5, nesterov=True)),
            run(optax.sgd(0.05, momentum=0.5, nesterov=True)),
        ),
    ]


def test_equals_adam_and_sgd_where_the_cosine_test_fails():
    params = {"w": RNG.normal(size=(4, 3)).astype(np.float32), "b": np.ones(3, np.float32)}
    for mine, ref in _against_optax(params):
        for k in params:
            np.testing.assert_allclose(mine[k], ref[k], rtol=1e-6, atol=1e-7)
        assert not np.allclose(mine["w"], params["w"])  # the runs moved


@jax.jit
def _views(w, g_channel, g_whole, g_radial, p):
    return [adamp.project(w, g, p) for g in (g_channel, g_whole, g_radial)]


def test_projection_tries_channels_then_the_whole_tensor():
    w = RNG.normal(size=(4, 2)).astype(np.float32)
    w[:, 1] *= np.linalg.norm(w[:, 0]) / np.linalg.norm(w[:, 1])  # equal channel norms
    p = RNG.normal(size=(4, 2)).astype(np.float32)
    tangent = RNG.normal(size=(4, 2)).astype(np.float32)
    tangent -= w * np.sum(tangent * w, 0) / np.sum(w * w, 0)  # orthogonal to each channel
    flip = w * np.array([1.0, -1.0], np.float32)  # cos = +-1 per channel, 0 for the whole tensor
    (pc, fc), (pw, fw), (pr, fr) = _views(w, tangent, flip, w, p)
    assert bool(fc) and bool(fw) and not bool(fr)
    # channel view: every channel of the update is orthogonal to that channel of w
    np.testing.assert_allclose(np.sum(pc * w, 0), 0.0, atol=1e-5)
    # whole-tensor view: orthogonal as one vector, yet not channel by channel
    assert abs(float(np.sum(pw * w))) < 1e-5
    assert np.abs(np.sum(pw * w, 0)).max() > 1e-2
    w_hat = w / np.linalg.norm(w)
    np.testing.assert_allclose(pw, p - w_hat * np.sum(w_hat * p), atol=1e-6)
    np.testing.assert_array_equal(pr, p)  # radial gradient: not scale-invariant, unchanged


def test_selectable_from_config_and_bad_names_fail_in_one_line():
    for name in ("adamp", "sgdp"):
        full = tiny_config(**{"optimizer.name": name})
        validate.config(full)  # the CLI's up-front check accepts the new names too
        assert isinstance(optim.build(full.optimizer, 10), optax.GradientTransformation)
    with pytest.raises(UserError) as e:
        optim.build(tiny_config(**{"optimizer.name": "adamq"}).optimizer, 10)
    msg = str(e.value)
    assert "\n" not in msg and "optimizer.name" in msg and "adamp" in msg and "sgdp" in msg

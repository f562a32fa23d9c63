"""AdamP and SGDP: Heo et al. 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights" (ICLR), Algorithms 1 (SGDP) and 2 (AdamP).

A weight followed by a normalisation layer is scale-invariant: the loss does not change with its
norm, so its gradient is orthogonal to it. Momentum then grows the weight's norm, which shrinks
the effective step size. AdamP/SGDP detect such weights by the cosine similarity between gradient
and weight, and remove the radial component of the update for them:

    if max |cos(w, g)| < delta / sqrt(dim(view)):   p <- p - (w_hat . p) w_hat,  wd <- wd * wd_ratio

The test is made first on the per-channel view (one row per output channel) and then on the
whole-tensor view (one row), as in the paper and the authors' code; the first that passes is
projected. 1-D parameters (biases, norm scales) are never projected.

Weight decay is decoupled (AdamW style) and multiplied by `wd_ratio` when the projection fires;
SGDP divides it by (1 - momentum), as the authors' code does. Without projection and decay, AdamP
is exactly `optax.adam` (same moments and bias correction).

Deliberate difference from the authors' PyTorch code: the channel axis. PyTorch weights put output
channels first; Flax kernels (Dense (in, out), Conv (h, w, in, out)) put them last, so the channel
view here is over `channel_axis=-1`.

`adamp(...)` / `sgdp(...)` are optax `GradientTransformation`s (direction, then
`scale_by_learning_rate`); `optimizer.name = "adamp" | "sgdp"` selects them in a config.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def _rows(x, channel_axis, per_channel):
    if per_channel:
        return jnp.moveaxis(x, channel_axis, 0).reshape(x.shape[channel_axis], -1)
    return x.reshape(1, -1)


def _unrows(rows, like, channel_axis, per_channel):
    if per_channel:
        moved = jnp.moveaxis(like, channel_axis, 0)
        return jnp.moveaxis(rows.reshape(moved.shape), 0, channel_axis)
    return rows.reshape(like.shape)


def project(w, g, p, delta: float = 0.1, eps: float = 1e-8, channel_axis: int = -1):
    """(p with its radial component removed, whether it was) for one weight: the projection of
    Algorithms 1-2.

    w: weight, g: gradient (for the cosine test), p: the update direction to project."""
    if w.ndim < 2:
        return p, jnp.asarray(False)
    out, done = p, jnp.asarray(False)
    for per_channel in (True, False):
        wv, gv, pv = (_rows(a, channel_axis, per_channel) for a in (w, g, p))
        wn = jnp.maximum(jnp.linalg.norm(wv, axis=1), eps)
        gn = jnp.maximum(jnp.linalg.norm(gv, axis=1), eps)
        cos = jnp.abs(jnp.sum(wv * gv, axis=1)) / (wn * gn)
        fires = jnp.max(cos) < delta / jnp.sqrt(wv.shape[1])
        w_hat = wv / (jnp.linalg.norm(wv, axis=1, keepdims=True) + eps)
        projected = pv - w_hat * jnp.sum(w_hat * pv, axis=1, keepdims=True)
        projected = _unrows(projected, p, channel_axis, per_channel)
        out = jnp.where(~done & fires, projected, out)
        done = done | fires
    return out, done


def _mask_tree(mask, params):
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    return mask(params) if callable(mask) else mask


def _project_tree(params, grads, direction, decay, delta, wd_ratio, eps, channel_axis, mask):
    """Projected direction plus the decoupled weight decay (times wd_ratio where it fired)."""

    def one(w, g, p, m):
        p, fired = project(w, g, p, delta, eps, channel_axis)
        if not decay:
            return p
        rate = jnp.where(fired, decay * wd_ratio, decay) * jnp.asarray(m, p.dtype)
        return p + rate * w

    return jax.tree.map(one, params, grads, direction, _mask_tree(mask, params))


class AdamPState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def scale_by_adamp(
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    delta=0.1,
    wd_ratio=0.1,
    weight_decay=0.0,
    nesterov=False,
    mask=None,
    channel_axis=-1,
) -> optax.GradientTransformation:
    """Algorithm 2's direction (before the learning rate); needs `params` in `update`."""

    def init(params):
        zeros = optax.tree_utils.tree_zeros_like(params)
        return AdamPState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("AdamP needs the parameters: call update(grads, state, params)")
        mu = optax.tree_utils.tree_update_moment(grads, state.mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(grads, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: b1 * m + (1 - b1) * g,
                optax.tree_utils.tree_bias_correction(mu, b1, optax.safe_increment(count)),
                optax.tree_utils.tree_bias_correction(grads, b1, count),
            )
        else:
            mu_hat = optax.tree_utils.tree_bias_correction(mu, b1, count)
        nu_hat = optax.tree_utils.tree_bias_correction(nu, b2, count)
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        direction = _project_tree(
            params, grads, direction, weight_decay, delta, wd_ratio, eps, channel_axis, mask
        )
        return direction, AdamPState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def adamp(learning_rate, **kwargs) -> optax.GradientTransformation:
    """AdamP (Algorithm 2): `scale_by_adamp(**kwargs)` then the (scheduled) learning rate."""
    return optax.chain(scale_by_adamp(**kwargs), optax.scale_by_learning_rate(learning_rate))


class SGDPState(NamedTuple):
    buf: Any


def scale_by_sgdp(
    momentum=0.9,
    dampening=0.0,
    nesterov=False,
    delta=0.1,
    wd_ratio=0.1,
    weight_decay=0.0,
    eps=1e-8,
    mask=None,
    channel_axis=-1,
) -> optax.GradientTransformation:
    """Algorithm 1's direction: heavy-ball momentum (buffer starts at zero), projected; the
    decoupled decay is weight_decay * (wd_ratio where projected) / (1 - momentum)."""

    def init(params):
        return SGDPState(optax.tree_utils.tree_zeros_like(params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("SGDP needs the parameters: call update(grads, state, params)")
        buf = jax.tree.map(lambda b, g: momentum * b + (1 - dampening) * g, state.buf, grads)
        if nesterov:
            direction = jax.tree.map(lambda g, b: g + momentum * b, grads, buf)
        else:
            direction = buf
        decay = weight_decay / (1 - momentum) if weight_decay else 0.0
        direction = _project_tree(
            params, grads, direction, decay, delta, wd_ratio, eps, channel_axis, mask
        )
        return direction, SGDPState(buf)

    return optax.GradientTransformation(init, update)


def sgdp(learning_rate, **kwargs) -> optax.GradientTransformation:
    """SGDP (Algorithm 1): `scale_by_sgdp(**kwargs)` then the (scheduled) learning rate."""
    return optax.chain(scale_by_sgdp(**kwargs), optax.scale_by_learning_rate(learning_rate))

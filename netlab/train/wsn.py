"""Winning SubNetworks (WSN) and SoftNet masks for continual learning: Kang, Mina, Madjid, Yoon,
Hasegawa-Johnson, Hwang & Yoo 2022, "Forget-free Continual Learning with Winning Subnetworks"
(ICML); Kang, Yoon, Madjid, Hwang & Yoo 2023, "On the Soft-Subnetwork for Few-shot
Class Incremental Learning" (ICLR).

WSN learns, next to the weights w, a real-valued score s per weight. Task t uses the subnetwork
w * m_t with m_t the top-c% of |s| (per layer): a binary mask. The mask's gradient is passed
straight through to the scores (`topc_mask`: forward the hard mask, backward identity, so
dL/ds = dL/d(w m) * w). Weights already used by earlier tasks (the union M of their masks) are
frozen: their gradient is zeroed (`freeze_used`, an optax transform), so every earlier task's
subnetwork w * m_t, and hence its predictions, stays exactly as it was (forget-free). After task t,
M <- M | m_t (`accumulate`); only m_t needs storing per task.

SoftNet replaces the zeros of the mask by soft values: the top-c% weights get 1 and the others a
value drawn from U(0, 1) (`soft_mask`), a regulariser for few-shot incremental sessions; the
major subnetwork (the 1s) is what is frozen afterwards.

Masks apply to weights with ndim >= 2 (kernels); other leaves (biases, norms) are used as they are
(`masked`), as in the WSN paper's convolutional and linear layers. Host-side use: a task's step
applies `masked(params, scores, c)` inside its loss and differentiates w.r.t. both params and
scores; nothing here is selectable as `optimizer.name` (the masks belong to the model's forward).
"""

import jax
import jax.numpy as jnp
import optax


def _hard_topc(scores, c):
    flat = jnp.abs(scores).ravel()
    k = max(1, round(c * flat.size))
    threshold = jnp.sort(flat)[flat.size - k]
    return (jnp.abs(scores) >= threshold).astype(scores.dtype)


def topc_mask(scores, c: float):
    """Binary mask of the top-c fraction of |scores| (round(c n) entries, ties kept), with the
    straight-through gradient: d mask / d scores = identity."""
    return jax.lax.stop_gradient(_hard_topc(scores, c)) + scores - jax.lax.stop_gradient(scores)


def soft_mask(scores, c: float, key):
    """SoftNet: 1 on the top-c fraction of |scores|, U(0, 1) elsewhere (straight-through)."""
    hard = _hard_topc(scores, c)
    soft = jnp.where(hard > 0, 1.0, jax.random.uniform(key, scores.shape)).astype(scores.dtype)
    return jax.lax.stop_gradient(soft) + scores - jax.lax.stop_gradient(scores)


def _is_masked(p):
    return jnp.ndim(p) >= 2


def masked(params, scores, c: float):
    """params with every kernel (ndim >= 2) multiplied by its top-c mask; `scores` like params."""
    return jax.tree.map(lambda p, s: p * topc_mask(s, c) if _is_masked(p) else p, params, scores)


def masks(scores, c: float):
    """The binary masks (no gradient), ones for leaves that are not masked."""
    return jax.tree.map(lambda s: _hard_topc(s, c) if _is_masked(s) else jnp.ones_like(s), scores)


def accumulate(used, mask):
    """M <- M | m_t after a task (float 0/1 trees)."""
    return jax.tree.map(jnp.maximum, used, mask)


def freeze_used(used) -> optax.GradientTransformation:
    """Zero the gradient of weights used by earlier tasks (put first in the chain); leaves that
    are not masked (biases, norms) are shared and frozen too once any task has been learned."""

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g, m: g * (1 - m).astype(g.dtype), grads, used), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

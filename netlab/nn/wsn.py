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

`freeze_finished_tasks` is `freeze_used` for a task sequence trained in one loop (the trainer's):
M lives in the optimizer state and grows at every task boundary from the finished task's scores,
read from the params. It goes last in the chain: zeroing only the gradient (first in the chain)
would let Adam's momentum from the earlier task keep moving the used weights. The continual
digits task uses it (`configs/classify_continual_digits.py:method=wsn`,
netlab/classify/continual_wsn.py).

The module lives in `netlab/nn/` so that tasks (pillars, which never import the engine) can use
it; `netlab.train.wsn` re-exports it.
"""

from typing import Any, NamedTuple

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


class TaskFreezeState(NamedTuple):
    count: Any  # updates so far
    used: Any  # M, like params["weights"]


def freeze_finished_tasks(num_tasks: int, steps_per_task: int, c: float):
    """An optax transform for params {"weights": tree, "scores": the same tree with a leading
    task axis}: update k trains task t = min(k // steps_per_task, num_tasks - 1); at the first
    update of task t > 0, M <- M | masks(scores[t - 1], c) (`accumulate`); the weights' updates are
    multiplied by 1 - M (`freeze_used`) and every task's scores but task t's are left unchanged."""

    def init(params):
        used = jax.tree.map(jnp.zeros_like, params["weights"])
        return TaskFreezeState(jnp.zeros([], jnp.int32), used)

    def update(updates, state, params=None):
        k = state.count
        task = jnp.minimum(k // steps_per_task, num_tasks - 1)
        boundary = (k % steps_per_task == 0) & (k // steps_per_task == task) & (task > 0)
        prev = jax.tree.map(lambda s: s[jnp.maximum(task - 1, 0)], params["scores"])
        grown = accumulate(state.used, masks(prev, c))
        used = jax.tree.map(lambda g, u: jnp.where(boundary, g, u), grown, state.used)
        weights, _ = freeze_used(used).update(updates["weights"], optax.EmptyState())

        def current(u):
            keep = jnp.arange(u.shape[0]) == task
            return u * keep.reshape((-1,) + (1,) * (u.ndim - 1)).astype(u.dtype)

        scores = jax.tree.map(current, updates["scores"])
        return {"weights": weights, "scores": scores}, TaskFreezeState(k + 1, used)

    return optax.GradientTransformation(init, update)

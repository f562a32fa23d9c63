"""t-batching (JODIE, Kumar et al., KDD 2019) and its loss corrections (Loghmani & Fazli 2023,
"Effect of Choosing Loss Function when Using T-batching for Representation Learning on Dynamic
Networks").

t-batches: within a time window, event j = (u_j, i_j) goes to t-batch
``b_j = max(last(u_j), last(i_j)) + 1`` and both ``last`` entries become b_j (0-based, ``last``
starts at -1), so every node appears at most once per t-batch and each node's events keep their
order across t-batches; the t-batches are processed one after another (:func:`assign`).

Loss corrections: JODIE's prediction loss for a t-batch B is the mean squared error between the
predicted and the true item embeddings, averaged over the |B| events and the D dimensions
(``torch.nn.MSELoss()``), and the window's loss sums these over its t-batches, so an event of a
small (typically late) t-batch weighs more than one of a large t-batch. The paper's two
corrections (:func:`prediction_loss`, ``reduction``):

- ``"mean"``: JODIE's original, sum over t-batches of the per-t-batch mean;
- ``"item_sum"``: |B| times the per-t-batch mean, i.e. the sum over events of each event's
  mean-over-dimensions error (every event weighs the same);
- ``"full_sum"``: the sum over events and dimensions (D times ``item_sum``).

Only the prediction term changes; JODIE's drift terms (``||u(t) - u(t-)||^2`` ...) stay
mean-reduced as in the authors' code, so they are not included here. Static shapes: events
[E, D] with a t-batch id each and a ``num_batches`` bound, padding rows masked.

In ``graph.temporal_link`` (netlab/graph/temporal_task.py) ``loss.reduction`` picks the reduction
of the link BCE (one positive and one negative per event, D = 2) over the step's batches, and
``data.batching = "tbatch"`` makes those batches JODIE t-batches (:func:`pack`, one window of
``batch_size * chunk`` events per step, JODIE's one backward pass per window).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.registry import check_choice

REDUCTIONS = ("mean", "item_sum", "full_sum")


def assign(src, dst, num_nodes: int | None = None) -> np.ndarray:
    """JODIE's t-batch id (int32 [E]) of each event (src[j], dst[j]), in time order (host)."""
    src, dst = np.asarray(src), np.asarray(dst)
    n = int(max(src.max(initial=-1), dst.max(initial=-1)) + 1) if num_nodes is None else num_nodes
    last = np.full(n, -1, np.int64)
    out = np.empty(len(src), np.int32)
    for j, (u, i) in enumerate(zip(src, dst)):
        b = max(last[u], last[i]) + 1
        out[j] = last[u] = last[i] = b
    return out


def pack(src, dst, window: int, size: int) -> list:
    """JODIE's t-batches of consecutive windows of ``window`` events, as lists of event indices.

    Returns one list per window; each holds the window's t-batches in order, a t-batch of more
    than ``size`` events cut into consecutive pieces of at most ``size`` (a piece keeps the
    node-once property, and pieces run one after another like t-batches).
    """
    src, dst = np.asarray(src), np.asarray(dst)
    out = []
    for lo in range(0, len(src), window):
        ids = assign(src[lo : lo + window], dst[lo : lo + window])
        pieces = []
        for b in range(int(ids.max()) + 1):
            members = lo + np.nonzero(ids == b)[0]
            pieces.extend(members[k : k + size] for k in range(0, len(members), size))
        out.append(pieces)
    return out


def prediction_loss(pred, target, batch_id, num_batches: int, mask=None, reduction="mean"):
    """The window's prediction loss: pred, target [E, D]; batch_id int [E] (< num_batches);
    mask bool [E] (padding False). ``reduction`` as in the module doc."""
    per_event = jnp.mean(jnp.square(pred - target), -1)  # [E]
    return reduce(per_event, batch_id, num_batches, mask, reduction, pred.shape[-1])


def reduce(per_event, batch_id, num_batches: int, mask=None, reduction="mean", dim: int = 1):
    """A window's loss from each event's loss averaged over its ``dim`` outputs: per_event [E],
    batch_id int [E] (< num_batches), mask bool [E]; ``reduction`` as in the module doc (any
    per-event loss, e.g. the temporal link task's BCE over a positive and a negative, dim 2)."""
    check_choice("loss.reduction", reduction, REDUCTIONS)
    if mask is None:
        mask = jnp.ones(per_event.shape, bool)
    per_event = jnp.where(mask, per_event, 0.0)
    if reduction == "item_sum":
        return per_event.sum()
    if reduction == "full_sum":
        return per_event.sum() * dim
    sums = jax.ops.segment_sum(per_event, batch_id, num_batches)
    counts = jax.ops.segment_sum(mask.astype(per_event.dtype), batch_id, num_batches)
    return jnp.sum(jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0))


__all__ = ["REDUCTIONS", "assign", "pack", "prediction_loss", "reduce"]

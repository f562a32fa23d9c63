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


def prediction_loss(pred, target, batch_id, num_batches: int, mask=None, reduction="mean"):
    """The window's prediction loss: pred, target [E, D]; batch_id int [E] (< num_batches);
    mask bool [E] (padding False). ``reduction`` as in the module doc."""
    check_choice("loss.reduction", reduction, REDUCTIONS)
    per_event = jnp.mean(jnp.square(pred - target), -1)  # [E]
    if mask is None:
        mask = jnp.ones(per_event.shape, bool)
    per_event = jnp.where(mask, per_event, 0.0)
    if reduction == "item_sum":
        return per_event.sum()
    if reduction == "full_sum":
        return per_event.sum() * pred.shape[-1]
    sums = jax.ops.segment_sum(per_event, batch_id, num_batches)
    counts = jax.ops.segment_sum(mask.astype(per_event.dtype), batch_id, num_batches)
    return jnp.sum(jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0))


__all__ = ["REDUCTIONS", "assign", "prediction_loss"]

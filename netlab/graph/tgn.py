"""TGN: Temporal Graph Networks (Rossi et al., 2020, arXiv:2006.10637), memory-based link scoring.

Per node i the model keeps a memory s_i [D] and the time of its last update t_i. For an event
(i, j, t, e_ij) of a batch (paper Sec. 3; identity message function, the authors' default):

- raw messages m_i = [s_i ‖ s_j ‖ e_ij ‖ φ(t − t_i)] and m_j = [s_j ‖ s_i ‖ e_ij ‖ φ(t − t_j)],
  all computed from the memory as it was before the batch;
- time encoding φ(Δ) = cos(w Δ + b) with learnable w initialised to 10^(−linspace(0, 9, d)), b = 0
  (the TGN code's ``TimeEncode``);
- aggregation of a node's messages within the batch: ``last`` (the last in batch order, as the TGN
  repository; PyG takes the largest timestamp, equal for sorted streams) or ``mean``;
- memory updater s_i ← GRU(m̄_i, s_i) (``flax.linen.GRUCell``, torch's GRUCell equations), and
  t_i ← the latest event time; nodes without messages keep both.

Embedding module (``embedding``): ``identity``, z_i = s_i(t⁻) (the paper's "TGN-id" ablation), or
``attention`` (the paper's default, one layer): q = [s_i ‖ φ(0)], keys and values
[s_j ‖ e_ij ‖ φ(t − t_ij)] over the ``num_neighbors`` most recent neighbours of i with t_ij < t,
multi-head attention (``heads``), an empty neighbourhood gives 0, then MergeLayer([att ‖ s_i]).
No static node features (the JODIE sets have none; TGN adds zeros). Neighbours live in per-node
ring buffers in the state, filled after each batch, so unlike TGN's timestamp-based neighbour
finder the events of the same batch are not visible (strictly less information, never more).
Decoder: TGN's MergeLayer, Linear(2D → D)-ReLU-Linear(D → 1) on [z_src ‖ z_dst], a logit.

Ordering and leakage (the paper's training scheme): every event of a batch is scored with the
memory from *before* the batch, then the batch updates the memory; :func:`run` scans this over
padded batches with ``lax.scan``. Forward values equal the TGN code's lazy "store raw messages,
apply them at the next batch" scheme. Gradients differ: backpropagating through the scan reaches
the memory updates of all earlier batches of the scanned chunk, while TGN detaches memory after
every optimiser step and gets memory gradients only from re-applying the previous batch's
messages. To truncate, run :func:`run` on chunks of a few batches and ``stop_gradient`` the state
between them (the first batch of a chunk then gets no memory gradient).

Metrics: :func:`average_precision` per batch averaged over batches (TGN's evaluation), and MRR from
``netlab.graph.link_eval.mrr``.

Registered as ``model.name = "tgn"`` of ``graph.temporal_link`` (netlab/graph/temporal_task.py,
configs/graph/tgn.py); ``dtype`` / ``param_dtype`` come from the precision policy, and the memory
and times are kept in the compute dtype (float64 under ``train.compute_dtype=float64``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph.registries import MODELS
from netlab.registry import check_choice, check_range

AGGREGATORS = ("last", "mean")
EMBEDDINGS = ("identity", "attention")


def time_init(key, shape, dtype=jnp.float32):
    """TGN's time-encoding frequencies 10^(−linspace(0, 9, d))."""
    del key
    return (10.0 ** -jnp.linspace(0.0, 9.0, shape[-1])).astype(dtype)


class TimeEncoding(nn.Module):
    """φ(Δ) = cos(w Δ + b), Δ [...] -> [..., dim]."""

    dim: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, dt):
        w = self.param("w", time_init, (self.dim,), self.param_dtype)
        b = self.param("b", nn.initializers.zeros, (self.dim,), self.param_dtype)
        return jnp.cos(dt[..., None] * w + b)


def init_state(num_nodes: int, memory_dim: int, dtype=jnp.float32) -> dict:
    """Zero memory and last-update times (TGN resets both at the start of every epoch)."""
    return {
        "memory": jnp.zeros((num_nodes, memory_dim), dtype),
        "last_update": jnp.zeros((num_nodes,), dtype),
    }


@MODELS.register("tgn")
class TGN(nn.Module):
    """TGN memory, embedding module and MergeLayer link decoder; ``step`` handles one batch."""

    TASK = "temporal"

    num_nodes: int
    memory_dim: int = 32
    time_dim: int = 16
    aggregator: str = "last"
    embedding: str = "identity"
    num_neighbors: int = 10
    heads: int = 2
    edge_dim: int = 0  # event feature width (the attention's neighbour buffers store features)
    dtype: Any = None  # compute dtype (the precision policy's); None: float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_choice("model.aggregator", self.aggregator, AGGREGATORS)
        check_choice("model.embedding", self.embedding, EMBEDDINGS)
        check_range("model.memory_dim", self.memory_dim, 1, None, integer=True)
        check_range("model.num_neighbors", self.num_neighbors, 1, None, integer=True)
        super().__post_init__()

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.time_enc = TimeEncoding(self.time_dim, self.param_dtype)
        self.gru = nn.GRUCell(self.memory_dim, **kw)
        self.dec_hidden = nn.Dense(self.memory_dim, **kw)
        self.dec_out = nn.Dense(1, **kw)
        if self.embedding == "attention":
            self.att = nn.MultiHeadDotProductAttention(
                num_heads=self.heads,
                qkv_features=self.memory_dim,
                out_features=self.memory_dim,
                **kw,
            )
            self.merge_hidden = nn.Dense(self.memory_dim, **kw)
            self.merge_out = nn.Dense(self.memory_dim, **kw)

    @property
    def state_dtype(self):
        """The dtype of the memory, times and PRES statistics: the compute dtype, else float32."""
        return self.dtype or jnp.float32

    def init_state(self) -> dict:
        f = self.state_dtype
        state = init_state(self.num_nodes, self.memory_dim, f)
        if self.embedding == "attention":
            n, k = self.num_nodes, self.num_neighbors
            state["nbr_id"] = jnp.zeros((n, k), jnp.int32)
            state["nbr_t"] = jnp.zeros((n, k), f)
            state["nbr_feat"] = jnp.zeros((n, k, self.edge_dim), f)
            state["nbr_valid"] = jnp.zeros((n, k), bool)
            state["nbr_count"] = jnp.zeros((n,), jnp.int32)
        return state

    def embed(self, state, nodes, t):
        """z_i(t) from memory before the batch: identity, or attention over earlier neighbours."""
        h = state["memory"][nodes]
        if self.embedding == "identity":
            return h
        nbr_t = state["nbr_t"][nodes]
        valid = state["nbr_valid"][nodes] & (nbr_t < t[:, None])
        kv = jnp.concatenate(
            [
                state["memory"][state["nbr_id"][nodes]],
                state["nbr_feat"][nodes],
                self.time_enc(t[:, None] - nbr_t),
            ],
            -1,
        )
        q = jnp.concatenate([h, self.time_enc(jnp.zeros_like(t))], -1)[:, None]
        att = self.att(q, kv, kv, mask=valid[:, None, None, :])[:, 0]
        att = jnp.where(valid.any(-1, keepdims=True), att, 0.0)
        return self.merge_out(nn.relu(self.merge_hidden(jnp.concatenate([att, h], -1))))

    def record_neighbours(self, state, batch):
        """Append the batch's events to both endpoints' ring buffers of the last k neighbours."""
        n, k = self.num_nodes, self.num_neighbors
        ids = jnp.stack([batch["src"], batch["dst"]], 1).reshape(-1)
        other = jnp.stack([batch["dst"], batch["src"]], 1).reshape(-1)
        mask = jnp.repeat(batch["mask"], 2)
        same = (ids[:, None] == ids[None, :]) & mask[:, None] & mask[None, :]
        rank = jnp.sum(jnp.tril(same, -1), 1, dtype=jnp.int32)  # earlier slots of the same node
        total = jnp.sum(same, 1, dtype=jnp.int32)
        write = mask & (rank >= total - k)  # only a node's last k events of the batch survive
        pos = (state["nbr_count"][ids] + rank) % k
        tgt = jnp.where(write, ids, n)

        def put(name, value):
            return state[name].at[tgt, pos].set(value, mode="drop")

        count = (
            state["nbr_count"]
            .at[jnp.where(mask, ids, n)]
            .set(state["nbr_count"][ids] + total, mode="drop")
        )
        return {
            **state,
            "nbr_id": put("nbr_id", other),
            "nbr_t": put("nbr_t", jnp.repeat(batch["t"], 2)),
            "nbr_feat": put("nbr_feat", jnp.repeat(batch["feat"], 2, axis=0)),
            "nbr_valid": put("nbr_valid", True),
            "nbr_count": count,
        }

    def decode(self, z_src, z_dst):
        h = nn.relu(self.dec_hidden(jnp.concatenate([z_src, z_dst], -1)))
        return self.dec_out(h)[..., 0]

    def messages(self, state, batch):
        """Node ids [2B], raw messages [2B, M], times, mask; interleaved (src_k, dst_k)."""
        mem, last = state["memory"], state["last_update"]
        src, dst, t = batch["src"], batch["dst"], batch["t"]

        def raw(a, b):
            dt = t - last[a]
            return jnp.concatenate([mem[a], mem[b], batch["feat"], self.time_enc(dt)], -1)

        ids = jnp.stack([src, dst], 1).reshape(-1)
        msg = jnp.stack([raw(src, dst), raw(dst, src)], 1).reshape(ids.shape[0], -1)
        times = jnp.repeat(t, 2)
        mask = jnp.repeat(batch["mask"], 2)
        return ids, msg, times, mask

    def aggregate(self, ids, msg, times, mask):
        """Per message slot, its node's aggregated message and latest time; ``has`` per slot."""
        n = self.num_nodes
        seg = jnp.where(mask, ids, n)  # masked slots go to a dropped extra segment
        if self.aggregator == "mean":
            total = jax.ops.segment_sum(jnp.where(mask[:, None], msg, 0.0), seg, n + 1)
            count = jax.ops.segment_sum(mask.astype(msg.dtype), seg, n + 1)
            agg = total / jnp.maximum(count, 1.0)[:, None]
        else:
            pos = jnp.where(mask, jnp.arange(ids.shape[0]), -1)
            lastpos = jax.ops.segment_max(pos, seg, n + 1)
            agg = msg[jnp.clip(lastpos, 0)]
        t_new = jax.ops.segment_max(jnp.where(mask, times, -jnp.inf), seg, n + 1)
        return agg[seg], t_new[seg]

    def update_memory(self, state, ids, new_rows, t_rows, mask):
        """Scatter the updated rows; masked slots are dropped (duplicates carry equal values)."""
        tgt = jnp.where(mask, ids, self.num_nodes)
        memory = state["memory"].at[tgt].set(new_rows, mode="drop")
        last = state["last_update"].at[tgt].set(t_rows, mode="drop")
        return {**state, "memory": memory, "last_update": last}

    def updated_rows(self, state, ids, agg):
        """GRU memory update of the rows ``ids`` from their aggregated messages."""
        new, _ = self.gru(state["memory"][ids], agg)
        return new

    def step(self, state, batch):
        """Score the batch's positives and negatives with pre-batch memory, then update memory."""
        z_src = self.embed(state, batch["src"], batch["t"])
        pos = self.decode(z_src, self.embed(state, batch["dst"], batch["t"]))
        neg = self.decode(z_src, self.embed(state, batch["neg"], batch["t"]))
        ids, msg, times, mask = self.messages(state, batch)
        agg, t_rows = self.aggregate(ids, msg, times, mask)
        new_rows = self.updated_rows(state, ids, agg)
        new = self.update_memory(state, ids, new_rows, t_rows, mask)
        if self.embedding == "attention":
            new = self.record_neighbours(new, batch)
        return new, (pos, neg)

    def __call__(self, state, batch):
        return self.step(state, batch)


def run(model: TGN, params, batches: dict, state=None):
    """``lax.scan`` of ``model.step`` over padded batches [nb, bs, ...] -> (state, outputs).

    Outputs are what ``step`` returns per batch, stacked: (pos, neg) logits [nb, bs] for TGN.
    """
    state = model.init_state() if state is None else state

    def body(st, batch):
        return model.apply(params, st, batch, method=type(model).step)

    return jax.lax.scan(body, state, batches)


def link_loss(pos, neg, mask):
    """Mean BCE over real events: positives labelled 1, the sampled negatives 0."""
    per = jax.nn.softplus(-pos) + jax.nn.softplus(neg)
    m = mask.astype(per.dtype)
    return jnp.sum(per * m) / jnp.maximum(jnp.sum(m), 1.0)


def average_precision(scores, labels) -> float:
    """AP = Σ_n (R_n − R_{n−1}) P_n over thresholds at each distinct score (as sklearn)"""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    precision = tp[last] / (last + 1)
    recall = tp[last] / max(tp[-1], 1)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def batched_average_precision(pos, neg, mask) -> float:
    """TGN's evaluation: AP of each batch's (positives, negatives), averaged over the batches."""
    pos, neg, mask = np.asarray(pos), np.asarray(neg), np.asarray(mask, bool)
    aps = []
    for p, q, m in zip(pos, neg, mask):
        if m.any():
            labels = np.r_[np.ones(m.sum()), np.zeros(m.sum())]
            aps.append(average_precision(np.r_[p[m], q[m]], labels))
    return float(np.mean(aps))


__all__ = [
    "TGN",
    "TimeEncoding",
    "average_precision",
    "batched_average_precision",
    "init_state",
    "link_loss",
    "run",
]

"""RNAR: Xu & Veličković, "Recurrent Aggregators in Neural Algorithmic Reasoning" (2024). An
LSTM replaces the permutation-invariant max aggregator of a neural algorithmic reasoning
processor, plus CLRS-style Quickselect traces to train it on.

Processor layer (dense, as the CLRS processors are: algorithmic graphs are small). Messages
m_ij = ReLU(W_r h_i + W_s h_j + b) for every receiver i and sender j; the aggregate at i is the
final hidden state of an LSTM (Hochreiter & Schmidhuber 1997; gates i, f, g, o,
c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g), h_t = σ(o) ⊙ tanh(c_t)) run over the senders j = 0..N−1
in node order, a step being skipped (the carry kept) where j -> i is not an edge:

    a_i = LSTM(m_{i,j_1}, m_{i,j_2}, ...)   over i's in-neighbours j_1 < j_2 < ...,
    h_i' = W_1 h_i + W_2 a_i + b'.

The aggregation is deliberately not permutation-invariant (the paper's point: the node order of
sequential algorithms is informative); node order is the index order, CLRS's ``pos`` order.
Dense [N, N, F] messages: O(N² F) memory, for graphs of tens to hundreds of nodes. The paper's
Triplet-GMPNN messages and CLRS encoders/decoders are not reproduced.

Quickselect traces (CLRS ``quickselect``, Lomuto partition with pivot A[r], target rank ⌊n/2⌋):
:func:`quickselect_trace` returns the selected node and one hint row per inner-loop step.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import layers as L
from netlab.graph.registries import LAYERS
from netlab.sharding import axes


def lstm_step(params, carry, x):
    """One LSTM step; params (w_x [F, 4H], w_h [H, 4H], b [4H]), gates ordered i, f, g, o."""
    w_x, w_h, b = params
    h, c = carry
    i, f, g, o = jnp.split(x @ w_x + h @ w_h + b, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def lstm_aggregate(params, messages, adj):
    """Final LSTM hidden state per receiver over senders in index order, skipping non-edges;
    messages [N, N, F] (receiver, sender), adj [N, N] bool -> [N, H] (zeros without in-edges)."""
    hdim = params[1].shape[0]
    n = messages.shape[0]
    zeros = jnp.zeros((n, hdim), messages.dtype)

    def body(carry, inp):
        m, a = inp
        new = lstm_step(params, carry, m)
        keep = a[:, None]
        return tuple(jnp.where(keep, nv, ov) for nv, ov in zip(new, carry)), None

    (h, _), _ = jax.lax.scan(body, (zeros, zeros), (messages.swapaxes(0, 1), adj.T))
    return h


def dense_adjacency(graph):
    """adj[i, j] = True where a real edge j -> i exists [N, N]."""
    n = graph.num_nodes
    adj = jnp.zeros((n, n), bool)
    return adj.at[graph.receivers, graph.senders].max(graph.edge_mask)


@LAYERS.register("rnar")
class RNARConv(nn.Module):
    """MPNN layer with an LSTM aggregator over in-neighbours in node order (see module doc)."""

    features: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        f = self.features
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        recv = L.dense(f, True, "msg_receiver", **kw)(x)
        send = L.dense(f, False, "msg_sender", **kw)(x)
        msgs = nn.relu(recv[:, None, :] + send[None, :, :])
        init = axes.param(L.glorot, axes.EMBED, axes.MLP)
        w_x = self.param("lstm_wx", init, (f, 4 * f), self.param_dtype)
        w_h = self.param("lstm_wh", init, (f, 4 * f), self.param_dtype)
        b = self.param(
            "lstm_b", axes.param(nn.initializers.zeros, axes.MLP), (4 * f,), self.param_dtype
        )
        dt = msgs.dtype
        agg = lstm_aggregate(
            (w_x.astype(dt), w_h.astype(dt), b.astype(dt)), msgs, dense_adjacency(graph)
        )
        root = L.dense(f, True, "lin_root", **kw)(x)
        return root + L.dense(f, False, "lin_agg", **kw)(agg)


def quickselect_trace(keys):
    """(selected index, hints) of CLRS quickselect on ``keys`` for rank ⌊n/2⌋ (0-based): Lomuto
    partition with pivot A[r], recursing into the side holding the target. ``hints`` is a dict of
    int arrays [T] (one row per inner-loop step j): the original node indices at p, r, i (−1 when
    i < p), j and the pivot, each as CLRS's mask_one pointers."""
    keys = np.asarray(keys)
    n = len(keys)
    a = list(range(n))  # the array holds node indices; compare their keys
    target = n // 2
    rows = {k: [] for k in ("p", "r", "i", "j", "pivot")}
    p, r = 0, n - 1
    while True:
        if p == r:
            return a[p], {k: np.asarray(v, np.int64) for k, v in rows.items()}
        pivot, i = a[r], p - 1
        for j in range(p, r):
            if keys[a[j]] <= keys[pivot]:
                i += 1
                a[i], a[j] = a[j], a[i]
            for k, v in (("p", a[p]), ("r", a[r]), ("i", a[i] if i >= p else -1), ("j", a[j])):
                rows[k].append(v)
            rows["pivot"].append(pivot)
        a[i + 1], a[r] = a[r], a[i + 1]
        q = i + 1
        if q == target:
            return a[q], {k: np.asarray(v, np.int64) for k, v in rows.items()}
        p, r = (p, q - 1) if target < q else (q + 1, r)


__all__ = ["RNARConv", "dense_adjacency", "lstm_aggregate", "lstm_step", "quickselect_trace"]

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

:class:`RNAR` is the encode-process-decode model trained on them (``nar_task.py``), CLRS-style
with hints decoded only (``decoded_only``: hints are supervision, never fed back): per step t,

    z = [Enc(pos, key) ‖ h^{(t−1)}],  m_ij = ReLU(W_r z_i + W_s z_j + b),
    a_i = AGG_j m_ij (lstm | max | sum over all real nodes j, CLRS's complete graph),
    h^{(t)} = LayerNorm(ReLU(W_1 z_i + W_2 a_i)),

then node-wise linear decoders give, for each of the 5 pointer hints (p, r, i, j, pivot) and the
output (the selected node), logits over the nodes (CLRS ``mask_one``: softmax over nodes). The
processor runs T steps (``nn.scan``, shared weights); step t is supervised with trace row t and
the output is read at each example's last real step. Deliberate differences from the paper: one
MPNN processor (not Triplet-GMPNN), no ``pred_h`` / scalar hints, no hint re-encoding.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.registry import check_choice
from netlab.sharding import axes

AGGREGATORS = ("lstm", "max", "sum")
HINTS = ("p", "r", "i", "j", "pivot")


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
        agg = dense_aggregate(self, "lstm", msgs, dense_adjacency(graph))
        root = L.dense(f, True, "lin_root", **kw)(x)
        return root + L.dense(f, False, "lin_agg", **kw)(agg)


def dense_aggregate(module, aggregator, msgs, adj):
    """AGG_j msgs[..., i, j, :] over adj[..., i, j] (msgs [..., N, N, F], adj [..., N, N] bool)
    -> [..., N, F]; max and sum give 0 at nodes without senders; lstm as :func:`lstm_aggregate`
    per leading index (its parameters created on ``module``)."""
    f = msgs.shape[-1]
    if aggregator == "sum":
        return jnp.where(adj[..., None], msgs, 0.0).sum(-2)
    if aggregator == "max":
        m = jnp.where(adj[..., None], msgs, -jnp.inf).max(-2)
        return jnp.where(adj.any(-1)[..., None], m, 0.0)
    init = axes.param(L.glorot, axes.EMBED, axes.MLP)
    w_x = module.param("lstm_wx", init, (f, 4 * f), module.param_dtype)
    w_h = module.param("lstm_wh", init, (f, 4 * f), module.param_dtype)
    b = module.param(
        "lstm_b", axes.param(nn.initializers.zeros, axes.MLP), (4 * f,), module.param_dtype
    )
    dt = msgs.dtype
    params = (w_x.astype(dt), w_h.astype(dt), b.astype(dt))
    fn = lambda m, a: lstm_aggregate(params, m, a)  # noqa: E731
    for _ in range(msgs.ndim - 3):
        fn = jax.vmap(fn)
    return fn(msgs, adj)


class ProcessorStep(nn.Module):
    """One processor step (see module doc): (h [B, N, H], enc [B, N, H], mask [B, N]) ->
    (h', (hint logits [B, N, 5], output logits [B, N]))."""

    hidden: int
    aggregator: str
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, enc, mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = jnp.concatenate([enc, h], -1)
        recv = L.dense(self.hidden, True, "msg_receiver", **kw)(z)
        send = L.dense(self.hidden, False, "msg_sender", **kw)(z)
        msgs = nn.relu(recv[..., :, None, :] + send[..., None, :, :])
        adj = mask[..., :, None] & mask[..., None, :]
        agg = dense_aggregate(self, self.aggregator, msgs, adj)
        h = nn.relu(
            L.dense(self.hidden, True, "lin_root", **kw)(z)
            + L.dense(self.hidden, False, "lin_agg", **kw)(agg)
        )
        h = nn.LayerNorm(epsilon=1e-5, name="norm", **kw)(h)
        hint = L.dense(len(HINTS), True, "hint_decoder", **kw)(h)
        out = L.dense(1, True, "output_decoder", **kw)(h)[..., 0]
        return h, (hint, out)


@MODELS.register("rnar")
class RNAR(nn.Module):
    """Encode-process-decode Quickselect reasoner (see module doc). Inputs x [B, N, 2] (pos, key),
    node mask [B, N] and ``num_steps`` (static); returns hint logits [B, T, 5, N] and output
    logits [B, T, N], padded nodes at −inf."""

    TASK = "nar"
    CHOICES = {"aggregator": AGGREGATORS}
    hidden: int = 32
    aggregator: str = "lstm"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask, num_steps: int):
        check_choice("model.aggregator", self.aggregator, AGGREGATORS)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        enc = L.dense(self.hidden, True, "encoder", **kw)(x)
        step = nn.scan(
            ProcessorStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=(nn.broadcast, nn.broadcast),
            length=num_steps,
        )(self.hidden, self.aggregator, name="processor", **kw)
        _, (hint, out) = step(jnp.zeros_like(enc), enc, mask)  # [T, B, N, 5], [T, B, N]
        neg = jnp.asarray(-jnp.inf, hint.dtype)
        hint = jnp.where(mask[None, :, :, None], hint, neg).transpose(1, 0, 3, 2)
        out = jnp.where(mask[None], out, neg).swapaxes(0, 1)
        return hint, out


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


__all__ = [
    "AGGREGATORS",
    "HINTS",
    "RNAR",
    "RNARConv",
    "ProcessorStep",
    "dense_adjacency",
    "dense_aggregate",
    "lstm_aggregate",
    "lstm_step",
    "quickselect_trace",
]

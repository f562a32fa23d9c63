"""PathNN: Michel, Nikolentzos, Lutzeyer & Vazirgiannis, "Path Neural Networks: Expressive and
Accurate Graph Neural Networks" (ICML 2023).

A node aggregates the paths that start at it. With P_k(v) the chosen paths of k edges starting at
v, layer k (k = 1..K−1, K = ``cutoff``) is the paper's eq. 2 as in the authors' code:

    h_v^(k) = ReLU( h_v^(k−1) + Σ_{p ∈ P_k(v)} LSTM(h^(k−1) along p, read from the far end to v) ),

one LSTM shared by all layers, its last hidden state summed at the start node v; layer k reads only
the paths with exactly k edges (layer 1 = the edges). Path sets (``variant``):

- ``sp``: one shortest path per ordered pair (u, v) with 0 < SPD(u, v) <= K−1 (networkx's BFS tie
  break; like the authors' igraph choice it depends on the node order, so SP is not exactly
  permutation invariant);
- ``sp+``: all shortest paths between such pairs (can be exponential, e.g. on grids);
- ``ap``: all simple paths with <= K−1 edges, O(n·Δ^{K−1}). AP separates graphs 1-WL cannot, e.g.
  C6 vs two triangles (simple paths of 3 edges) and decalin vs bicyclopentyl (5 edges).

Paths are enumerated once on the host (:meth:`PathNN.prepare_graph`, called by the node task) and
stored per length k as padded index arrays [M_k, k+1] (start node first) with masks in
``graph.norm``; each bucket is padded to a multiple of 128 paths, or to ``max_paths`` when set (a
bucket that does not fit is a one-line error naming that setting; with ``max_paths`` set the
enumeration stops as soon as it overflows).

Deliberate differences: a node model (the node task calls ``prepare_graph``; the graph task has no
per-graph host hook), so graph-level outputs are a sum over node outputs (:func:`graph_readout`;
the paper's readout is sum -> MLP); the AP "distance encoding" and per-layer L2 normalisation
options of the authors' code are left out; encoder = Linear-ReLU-Linear as theirs. The LSTM is
written out (:func:`lstm`, torch's gate equations with one bias, a ``lax.scan`` over the path) so
all paths of one length run as one batched scan.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from netlab.errors import UserError
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.padding import GraphBudgetError, round_up
from netlab.graph.registries import MODELS

VARIANTS = ("sp", "sp+", "ap")


class _Overflow(Exception):
    pass


def to_networkx(senders, receivers, num_nodes: int) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(int(num_nodes)))
    g.add_edges_from(zip(np.asarray(senders).tolist(), np.asarray(receivers).tolist()))
    return g


def _simple_paths(g, v, max_edges, emit):
    stack = [(v, iter(sorted(g[v])))]
    path, seen = [v], {v}
    while stack:
        _, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            seen.discard(path.pop())
            continue
        if child in seen:
            continue
        path.append(child)
        emit(path)
        if len(path) - 1 < max_edges:
            seen.add(child)
            stack.append((child, iter(sorted(g[child]))))
        else:
            path.pop()


def _shortest_paths_from(g, u, max_edges, emit):
    preds = nx.predecessor(g, u, cutoff=max_edges)

    def back(path):  # path is reversed: target ... ; extend towards u
        if path[-1] == u:
            emit(path[::-1])
            return
        for p in sorted(preds[path[-1]]):
            back(path + [p])

    for v in sorted(preds):
        if v != u:
            back([v])


def enumerate_paths(senders, receivers, num_nodes: int, cutoff: int, variant: str, limit=0):
    """{k: int32 [N_k, k+1]} for k = 1..cutoff−1: the ``variant`` paths with k edges, each row
    starting at the node it is aggregated at. ``limit`` > 0 stops once a bucket exceeds it."""
    g = to_networkx(senders, receivers, num_nodes)
    max_edges = int(cutoff) - 1
    out = {k: [] for k in range(1, max_edges + 1)}

    def emit(path):
        bucket = out[len(path) - 1]
        bucket.append(tuple(path))
        if limit and len(bucket) > limit:
            raise _Overflow(len(path) - 1)

    try:
        for u in range(int(num_nodes)):
            if variant == "ap":
                _simple_paths(g, u, max_edges, emit)
            elif variant == "sp+":
                _shortest_paths_from(g, u, max_edges, emit)
            else:
                for v, p in sorted(nx.single_source_shortest_path(g, u, max_edges).items()):
                    if v > u:
                        emit(p)
                        emit(p[::-1])
    except _Overflow as e:
        k = e.args[0]
        raise GraphBudgetError(
            f"PathNN ({variant}) has more than model.max_paths={limit} paths with {k} edges; "
            "raise model.max_paths (or lower model.cutoff, or use variant sp)"
        ) from None
    return {k: np.array(v, np.int32).reshape(-1, k + 1) for k, v in out.items()}


def lstm(seq, w_in, w_rec, bias):
    """Last hidden state of a one-layer LSTM (Hochreiter & Schmidhuber 1997; gates i, f, g, o as
    in ``torch.nn.LSTM``) over ``seq`` [T, M, d] from zero state; a ``lax.scan`` over T."""
    return lstm_projected(seq @ w_in + bias, w_rec)


def lstm_projected(xs, w_rec):
    """:func:`lstm` given the projected inputs xs = seq @ w_in + bias [T, M, 4d] (PathNN projects
    each node once and gathers the projections along the paths)."""

    def step(carry, x):
        c, h = carry
        i, f, g, o = jnp.split(x + h @ w_rec, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), None

    zero = jnp.zeros(xs.shape[1:2] + (w_rec.shape[0],), xs.dtype)
    return jax.lax.scan(step, (zero, zero), xs)[0][1]


def graph_readout(graph, x):
    """Sum of node rows per graph [G, F] (padding nodes masked)."""
    return G.pool(graph, x, "sum")


@MODELS.register("pathnn")
class PathNN(nn.Module):
    """PathNN node model: Linear-ReLU-Linear encoder -> cutoff−1 path layers (shared LSTM) ->
    dropout -> Linear head. ``max_paths`` fixes each length bucket's padded size (0: fitted)."""

    TASK = "node"
    CHOICES = {"variant": VARIANTS}
    hidden: int = 64
    num_classes: int = 7
    cutoff: int = 3
    variant: str = "ap"
    max_paths: int = 0
    dropout: float = 0.0
    input_dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.cutoff < 2 or self.max_paths < 0:
            raise UserError(
                f"model.cutoff={self.cutoff} / model.max_paths={self.max_paths}: cutoff must be "
                ">= 2 (paths of up to cutoff-1 edges) and max_paths >= 0 (0 = fitted)"
            )
        super().__post_init__()

    def prepare_graph(self, graph):
        """The numpy :class:`Graph` with ``pathnn{k}_idx`` [M_k, k+1] and ``pathnn{k}_mask``
        [M_k] in ``graph.norm`` for k = 1..cutoff−1."""
        em = np.asarray(graph.edge_mask)
        s, r = np.asarray(graph.senders)[em], np.asarray(graph.receivers)[em]
        n, big = int(np.asarray(graph.node_mask).sum()), graph.num_nodes
        norm = dict(graph.norm or {})
        paths = enumerate_paths(s, r, n, self.cutoff, self.variant, self.max_paths)
        for k, p in paths.items():
            size = self.max_paths or round_up(max(len(p), 1), 128)
            idx = np.full((size, k + 1), min(n, big - 1), np.int32)
            idx[: len(p)] = p
            norm[f"pathnn{k}_idx"], norm[f"pathnn{k}_mask"] = idx, np.arange(size) < len(p)
        return graph.replace(norm=norm)

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if graph.norm is None or "pathnn1_idx" not in graph.norm:
            raise UserError(
                "PathNN needs its paths precomputed on the host: build the graph with "
                "PathNN.prepare_graph(graph) (the node task does this)"
            )
        x = L.Dropout(self.input_dropout)(x, deterministic=not train)
        h = L.dense(self.hidden, True, "encoder0", **kw)(x)
        h = L.dense(self.hidden, True, "encoder1", **kw)(nn.relu(h))
        d, pdt = self.hidden, self.param_dtype
        w_in = self.param("lstm_in", nn.initializers.lecun_normal(), (d, 4 * d), pdt)
        w_rec = self.param("lstm_rec", nn.initializers.orthogonal(), (d, 4 * d), pdt)
        bias = self.param("lstm_bias", nn.initializers.zeros, (4 * d,), pdt)
        for k in range(1, self.cutoff):
            idx, mask = graph.norm[f"pathnn{k}_idx"], graph.norm[f"pathnn{k}_mask"]
            proj = h @ w_in.astype(h.dtype) + bias.astype(h.dtype)  # once per node
            xs = jnp.swapaxes(proj[idx[:, ::-1]], 0, 1)  # [k+1, M, 4d], far end -> start node
            out = lstm_projected(xs, w_rec.astype(h.dtype))
            msg = out * mask[:, None].astype(out.dtype)
            h = nn.relu(h + G.segment_sum(msg, idx[:, 0], h.shape[0]))
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        return L.dense(self.num_classes, True, "head", **kw)(h)


__all__ = [
    "PathNN",
    "VARIANTS",
    "enumerate_paths",
    "graph_readout",
    "lstm",
    "lstm_projected",
    "to_networkx",
]

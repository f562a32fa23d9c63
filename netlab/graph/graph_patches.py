"""Bags of subgraphs for the subgraph models (Graph ViT / MLP-Mixer patches, k,l-GNN marked copies,
SPEN ego-nets): host-side extraction, once per graph and cached, packed into static-size arrays.

A *bag* turns every graph of a padded batch into a set of subgraphs whose nodes are *copies* of the
graph's nodes (a node in three subgraphs has three copies). Per batch, stored in ``graph.norm``
under ``<prefix>_<key>``:

- copies [C]: ``node`` (the original node), ``sub`` (its subgraph), ``mark`` (an integer label:
  tuple position, hop distance, ...), ``cmask``;
- copy edges [Ec]: ``senders`` / ``receivers`` (copy indices; the edges of the graph between two
  copies of one subgraph), ``emask``;
- subgraphs [S]: ``sgraph`` (graph index), ``smask``; S = graphs × ``slots`` subgraph slots per
  graph (patches, tuples), or S = N (``slots=None``: one subgraph per node, the ego-nets), so a
  subgraph's index is a function of the batch layout alone.

C and Ec are static functions of the padding budget and the model's knob (``copy_size``,
``edge_size``), so every batch of one bucket has the same shapes; one copy and one edge are kept
for padding (they point at the padding node / padding subgraph), and a batch that needs more is a
one-line :class:`GraphBudgetError` naming the knob. The per-graph work is a pure function of
(edge list, node count, parameters), memoised in a process-wide LRU cache, so each distinct graph
is processed once however many batches it joins.

Inside the step (jittable): :func:`get` reads the arrays back, :func:`copy_propagate` sums over copy
edges, :func:`sub_pool` / :func:`node_pool` pool copies per subgraph / per original node, and
:class:`CopyGIN` is a GIN layer (Xu et al. 2019) on the copies.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.padding import GraphBudgetError

KEYS = ("node", "sub", "mark", "cmask", "senders", "receivers", "emask", "sgraph", "smask")
_CACHE: collections.OrderedDict = collections.OrderedDict()
CACHE_SIZE = 8192


@dataclasses.dataclass
class LocalBag:
    """One graph's bag, in local indices: copies (``node``, ``sub``, ``mark``), copy edges, and
    per-node / per-subgraph extra arrays (``node_extra`` [n, ...], ``sub_extra`` [slots, ...])."""

    node: np.ndarray
    sub: np.ndarray
    mark: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    node_extra: dict = dataclasses.field(default_factory=dict)
    sub_extra: dict = dataclasses.field(default_factory=dict)


def induced_copies(senders, receivers, n: int, members, marks=None) -> LocalBag:
    """The bag whose subgraph i holds the nodes ``members[i]`` (int arrays) with the graph's edges
    among them; ``marks[i]`` labels its copies (default 0)."""
    node, sub, mark, es, er = [], [], [], [], []
    start = 0
    s, r = np.asarray(senders), np.asarray(receivers)
    for i, m in enumerate(members):
        m = np.asarray(m, np.int64)
        pos = np.full(n, -1, np.int64)
        pos[m] = np.arange(len(m)) + start
        keep = (pos[s] >= 0) & (pos[r] >= 0)
        es.append(pos[s[keep]])
        er.append(pos[r[keep]])
        node.append(m)
        sub.append(np.full(len(m), i, np.int64))
        mark.append(np.zeros(len(m), np.int64) if marks is None else np.asarray(marks[i]))
        start += len(m)
    cat = lambda v: (np.concatenate(v) if v else np.zeros(0, np.int64)).astype(np.int32)  # noqa: E731
    return LocalBag(cat(node), cat(sub), cat(mark), cat(es), cat(er))


def cached(fn, params: tuple, senders, receivers, n: int):
    """``fn(senders, receivers, n, *params)``, memoised on (fn, params, the edge list, n)."""
    s, r = np.ascontiguousarray(senders, np.int32), np.ascontiguousarray(receivers, np.int32)
    key = (fn.__module__, fn.__qualname__, params, int(n), s.tobytes(), r.tobytes())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    out = fn(s, r, int(n), *params)
    _CACHE[key] = out
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def split_graphs(graph):
    """[(first node, node count, local senders, local receivers, edge positions)] per real graph
    of a numpy padded batch."""
    em = np.asarray(graph.edge_mask)
    s_all, r_all = np.asarray(graph.senders), np.asarray(graph.receivers)
    ng = np.asarray(graph.node_graph)
    counts = np.asarray(graph.n_node)[np.asarray(graph.graph_mask)]
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for i, n in enumerate(counts):
        pos = np.nonzero(em & (ng[s_all] == i))[0]
        lo = starts[i]
        out.append((int(lo), int(n), s_all[pos] - lo, r_all[pos] - lo, pos))
    return out


def pack(graph, prefix: str, locals_, slots, copy_size: int, edge_size: int, knob: str):
    """The numpy batch ``graph`` with the per-graph bags ``locals_`` (one per real graph, in
    order) packed into ``graph.norm`` (see the module docstring). ``slots``: subgraph slots per
    graph, or None for one subgraph per node."""
    big_n, n_graph = graph.num_nodes, graph.num_graphs
    parts = split_graphs(graph)
    n_real = sum(p[1] for p in parts)
    n_sub = big_n if slots is None else n_graph * slots
    pad_sub = min(n_real, big_n - 1) if slots is None else len(parts) * slots
    pad_node = min(n_real, big_n - 1)
    n_copies = sum(len(b.node) for b in locals_)
    n_edges = sum(len(b.senders) for b in locals_)
    if n_copies + 1 > copy_size or n_edges > edge_size:
        raise GraphBudgetError(
            f"{prefix}: a batch needs {n_copies} subgraph node copies and {n_edges} copy edges "
            f"but the budget from {knob} holds {copy_size - 1} / {edge_size}; raise {knob} (or "
            "lower data.graphs_per_batch)"
        )
    node = np.full(copy_size, pad_node, np.int32)
    sub = np.full(copy_size, pad_sub, np.int32)
    mark = np.zeros(copy_size, np.int32)
    snd = np.full(edge_size, n_copies, np.int32)
    rcv = np.full(edge_size, n_copies, np.int32)
    sgraph = np.full(n_sub, len(parts), np.int32)
    smask = np.zeros(n_sub, bool)
    c = e = 0
    norm = dict(graph.norm or {})
    extras = {}
    for i, ((lo, n, _, _, _), b) in enumerate(zip(parts, locals_)):
        k, m = len(b.node), len(b.senders)
        base = lo if slots is None else i * slots
        node[c : c + k], sub[c : c + k], mark[c : c + k] = b.node + lo, b.sub + base, b.mark
        snd[e : e + m], rcv[e : e + m] = b.senders + c, b.receivers + c
        width = n if slots is None else slots
        sgraph[base : base + width] = i
        smask[base : base + width][np.unique(b.sub)] = True
        for kind, d, rows, off in (
            ("node", b.node_extra, big_n, lo),
            ("sub", b.sub_extra, n_sub, base),
        ):
            for name, v in d.items():
                v = np.asarray(v)
                full = extras.setdefault((kind, name), np.zeros((rows,) + v.shape[1:], v.dtype))
                full[off : off + len(v)] = v
        c, e = c + k, e + m
    values = (node, sub, mark, np.arange(copy_size) < c, snd, rcv, np.arange(edge_size) < e)
    for key, v in zip(KEYS, values + (sgraph, smask)):
        norm[f"{prefix}_{key}"] = v
    for (_, name), v in extras.items():
        norm[f"{prefix}_{name}"] = v
    return graph.replace(norm=norm)


def get(graph, prefix: str, model: str) -> dict:
    """The bag arrays of ``graph.norm`` (inside jit); a graph without them is a one-line error
    naming ``model``'s prepare_graph."""
    if graph.norm is None or f"{prefix}_node" not in graph.norm:
        raise UserError(
            f"{model} needs its subgraphs precomputed on the host: build the batch with "
            f"{model}.prepare_graph(graph) (the graph and node tasks do this)"
        )
    return {k: graph.norm[f"{prefix}_{k}"] for k in KEYS}


def copy_propagate(bag: dict, h):
    """Σ over copy edges c' -> c of h[c'], at every copy c (padding edges masked)."""
    msg = h[bag["senders"]] * bag["emask"][:, None].astype(h.dtype)
    return G.segment_sum(msg, bag["receivers"], h.shape[0])


def sub_pool(bag: dict, h, num_subs: int, aggr: str = "mean"):
    """Per-subgraph sum or mean of the real copies' rows -> [S, ...]."""
    w = bag["cmask"].astype(h.dtype)
    if aggr == "sum":
        return G.segment_sum(h * w[:, None], bag["sub"], num_subs)
    return G.segment_mean(h, bag["sub"], num_subs, weights=w)


def node_pool(bag: dict, h, num_nodes: int, aggr: str = "mean"):
    """Per-original-node sum or mean over its copies -> [N, ...] (nodes without a copy: 0)."""
    w = bag["cmask"].astype(h.dtype)
    if aggr == "sum":
        return G.segment_sum(h * w[:, None], bag["node"], num_nodes)
    return G.segment_mean(h, bag["node"], num_nodes, weights=w)


class CopyGIN(nn.Module):
    """GIN update on bag copies: MLP(h + Σ_{copy edges} h) (Xu et al. 2019, eq. 4.1, ε = 0)."""

    hidden: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, bag, h):
        mlp = L.MLP((self.hidden, self.hidden), dtype=self.dtype, param_dtype=self.param_dtype)
        return mlp(h + copy_propagate(bag, h))


def masked_mean(x, mask, axis):
    """Mean of ``x`` over ``axis`` counting only rows where ``mask`` (0 when none)."""
    m = jnp.expand_dims(mask.astype(x.dtype), -1)
    return (x * m).sum(axis) / jnp.maximum(m.sum(axis), 1)


__all__ = [
    "CopyGIN",
    "KEYS",
    "LocalBag",
    "cached",
    "copy_propagate",
    "get",
    "induced_copies",
    "masked_mean",
    "node_pool",
    "pack",
    "split_graphs",
    "sub_pool",
]

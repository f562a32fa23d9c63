"""Static-shape graphs and the one message-passing core that every netlab graph layer uses.

Representation. A :class:`Graph` is a pytree holding one graph or a batch of graphs concatenated
(jraph's ``GraphsTuple`` convention: absolute ``senders``/``receivers`` into the node array), padded
to a fixed size and carrying explicit masks:

- real nodes come first, then padding nodes; real edges first (sorted by receiver, then sender),
  then padding edges whose sender and receiver are the *first padding node* (index = number of real
  nodes), so receivers stay sorted after padding and a padding edge never touches a real node;
- ``edge_weight`` is the raw edge weight (1 for an unweighted graph) and 0 on padding edges;
- ``node_graph`` gives each node its graph index (padding nodes belong to the first padding graph),
  used for pooling; ``graph_mask`` marks real graphs;
- ``norm`` holds normalisations computed once on the host (PyG ``cached=True``), e.g. the GCN
  coefficients ``gcn_edge`` [E] and ``gcn_self`` [N];
- ``sorted_receivers`` is static (pytree aux data) and forwarded to XLA as ``indices_are_sorted``.

Self-loops are never stored as edges: builders strip them and layers that want them (GCN, GAT,
APPNP) add the self term node-wise, which equals PyG's ``add_remaining_self_loops`` with fill 1.

Padding budgets. :class:`BucketLadder` holds a short ladder of (nodes, edges, graphs) budgets so a
jitted step compiles once per bucket; a batch that exceeds the largest bucket raises
:class:`GraphBudgetError`, a one-line message naming the config setting to raise.

Core. :func:`propagate` aggregates per-edge messages at receivers (sum/mean/max) with the sortedness
hint; :func:`segment_softmax` normalises per-edge logits over each receiver's incoming edges. Messages
are annotated with the logical axis ``EDGES``: when a mesh + rules map ``edges`` onto devices (the
edge-sharded full-batch mode), each device aggregates its edge shard into a full node array and XLA
sums the partial aggregates with one all-reduce.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import struct

from netlab.errors import UserError
from netlab.sharding import axes

AGGREGATIONS = ("sum", "mean", "max")


class GraphBudgetError(UserError):
    """A graph or batch of graphs does not fit its padding budget."""


@struct.dataclass
class Graph:
    """A padded graph (or batch of graphs) with masks; see the module docstring for conventions."""

    nodes: Any                 # node features [N, ...] (or a dict of them), padding rows zero
    senders: Any               # [E] int32
    receivers: Any             # [E] int32, sorted ascending when sorted_receivers
    edge_weight: Any           # [E] float32, 0 on padding edges
    node_mask: Any             # [N] bool
    edge_mask: Any             # [E] bool
    node_graph: Any            # [N] int32 graph index of every node
    graph_mask: Any            # [G] bool
    n_node: Any                # [G] int32
    n_edge: Any                # [G] int32
    edges: Any = None          # edge features [E, ...] or None
    globals: Any = None        # graph features [G, ...] or None
    norm: Any = None           # dict of host-precomputed normalisations (e.g. gcn_edge, gcn_self)
    sorted_receivers: bool = struct.field(pytree_node=False, default=True)

    @property
    def num_nodes(self) -> int:
        return int(self.node_mask.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_mask.shape[0])

    @property
    def num_graphs(self) -> int:
        return int(self.graph_mask.shape[0])

    def to_jraph(self) -> jraph.GraphsTuple:
        return jraph.GraphsTuple(nodes=self.nodes, edges=self.edges, receivers=self.receivers,
                                 senders=self.senders, globals=self.globals, n_node=self.n_node,
                                 n_edge=self.n_edge)


# --------------------------------------------------------------------------------------------
# The message-passing core (jittable).
# --------------------------------------------------------------------------------------------

def _edge_constrain(x):
    return axes.constrain(x, axes.EDGES, *([None] * (x.ndim - 1)))


def _node_constrain(x):
    return axes.constrain(x, axes.NODES, *([None] * (x.ndim - 1)))


def gather(graph: Graph, x, at: str = "senders"):
    """Node rows at the edges' senders (or receivers), annotated as edge-sharded activations."""
    idx = graph.senders if at == "senders" else graph.receivers
    return _edge_constrain(jnp.take(x, _edge_constrain(idx), axis=0))


def segment_sum(data, segment_ids, num_segments: int, indices_are_sorted: bool = False):
    return jax.ops.segment_sum(data, segment_ids, num_segments=num_segments,
                               indices_are_sorted=indices_are_sorted)


def segment_max(data, segment_ids, num_segments: int, indices_are_sorted: bool = False):
    """Segment max with empty segments set to 0 (not -inf)."""
    out = jax.ops.segment_max(data, segment_ids, num_segments=num_segments,
                              indices_are_sorted=indices_are_sorted)
    return jnp.where(jnp.isfinite(out), out, jnp.zeros_like(out))


def segment_mean(data, segment_ids, num_segments: int, indices_are_sorted: bool = False, weights=None):
    """Mean over each segment's rows (rows with weight 0 are not counted); empty segments give 0."""
    if weights is None:
        weights = jnp.ones(data.shape[:1], data.dtype)
    total = segment_sum(data * _expand(weights, data), segment_ids, num_segments, indices_are_sorted)
    count = segment_sum(weights.astype(jnp.float32), segment_ids, num_segments, indices_are_sorted)
    return total / _expand(jnp.maximum(count, 1.0), total).astype(total.dtype)


def segment_softmax(logits, segment_ids, num_segments: int, indices_are_sorted: bool = False, mask=None):
    """Softmax of per-edge logits [E, ...] over the edges that share a segment (receiver).

    Masked-out rows get weight 0 and do not enter the normaliser; a segment with no unmasked row
    yields zeros. Accumulates in float32.
    """
    dtype = logits.dtype
    logits = logits.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(_expand(mask, logits), logits, -jnp.inf)
    seg_max = jax.ops.segment_max(logits, segment_ids, num_segments=num_segments,
                                  indices_are_sorted=indices_are_sorted)
    seg_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(seg_max), seg_max, 0.0))
    ex = jnp.exp(logits - seg_max[segment_ids])
    if mask is not None:
        ex = jnp.where(_expand(mask, ex), ex, 0.0)
    denom = jax.ops.segment_sum(ex, segment_ids, num_segments=num_segments,
                                indices_are_sorted=indices_are_sorted)
    out = ex / jnp.where(denom > 0, denom, 1.0)[segment_ids]
    return out.astype(dtype)


def propagate(graph: Graph, messages, norm=None, aggr: str = "sum"):
    """Aggregate per-edge ``messages`` [E, ...] at the receivers -> [N, ...].

    ``norm`` [E] (or [E, H] broadcasting against messages) scales each message first. ``aggr`` is
    ``sum`` (padding edges contribute only to the padding node), ``mean`` (over real incoming edges)
    or ``max`` (over real incoming edges; nodes without any give 0). This is the shared
    message-passing step of every layer in netlab.graph: A_norm @ X is
    ``propagate(g, gather(g, x), g.norm["gcn_edge"])`` plus the self term.
    """
    if aggr not in AGGREGATIONS:
        raise ValueError(f"aggr={aggr!r}; choose one of {', '.join(AGGREGATIONS)}")
    messages = _edge_constrain(messages)
    if norm is not None:
        messages = messages * _expand(norm, messages).astype(messages.dtype)
    n, srt = graph.num_nodes, graph.sorted_receivers
    recv = _edge_constrain(graph.receivers)
    if aggr == "sum":
        out = segment_sum(messages, recv, n, srt)
    elif aggr == "mean":
        out = segment_mean(messages, recv, n, srt, weights=graph.edge_mask.astype(messages.dtype))
    else:
        masked = jnp.where(_expand(graph.edge_mask, messages), messages, -jnp.inf)
        out = segment_max(masked, recv, n, srt)
    return _node_constrain(out)


def edge_softmax(graph: Graph, logits):
    """Softmax of per-edge logits over each receiver's incoming real edges (GAT attention)."""
    return segment_softmax(_edge_constrain(logits), _edge_constrain(graph.receivers), graph.num_nodes,
                           graph.sorted_receivers, mask=graph.edge_mask)


def edge_softmax_with_self(graph: Graph, edge_logits, self_logits):
    """Softmax over each receiver's incoming real edges *and* its self-loop (GAT with self-loops).

    ``edge_logits`` [E, ...] and ``self_logits`` [N, ...]; returns ``(edge_attn, self_attn)`` that sum
    to 1 per node. The self-loop is kept out of the edge list (see module docstring), so its logit
    joins the per-receiver max and normaliser here. Accumulates in float32.
    """
    dtype = edge_logits.dtype
    el = _edge_constrain(edge_logits.astype(jnp.float32))
    sl = self_logits.astype(jnp.float32)
    recv, n, srt = _edge_constrain(graph.receivers), graph.num_nodes, graph.sorted_receivers
    mask = _expand(graph.edge_mask, el)
    el = jnp.where(mask, el, -jnp.inf)
    m = jnp.maximum(jax.ops.segment_max(el, recv, num_segments=n, indices_are_sorted=srt), sl)
    m = jax.lax.stop_gradient(_node_constrain(m))
    ex = jnp.where(mask, jnp.exp(el - m[recv]), 0.0)
    es = jnp.exp(sl - m)
    denom = _node_constrain(jax.ops.segment_sum(ex, recv, num_segments=n, indices_are_sorted=srt)) + es
    return (ex / denom[recv]).astype(dtype), (es / denom).astype(dtype)


def degree(graph: Graph, weighted: bool = True):
    """In-degree at each receiver (sum of edge weights, padding edges excluded), float32 [N]."""
    w = graph.edge_weight if weighted else graph.edge_mask
    return segment_sum(w.astype(jnp.float32), graph.receivers, graph.num_nodes, graph.sorted_receivers)


def gcn_coefficients(graph: Graph, add_self_loops: bool = True):
    """``(edge_coef [E], self_coef [N])`` of D^-1/2 (A + I) D^-1/2; the host-precomputed copy if present."""
    key = "gcn" if add_self_loops else "gcn_noloop"
    if graph.norm is not None and f"{key}_edge" in graph.norm:
        return graph.norm[f"{key}_edge"], graph.norm[f"{key}_self"]
    return gcn_norm(graph.senders, graph.receivers, graph.edge_weight, graph.num_nodes,
                    add_self_loops=add_self_loops, xp=jnp)


def normalized_adjacency_matmul(graph: Graph, x, add_self_loops: bool = True):
    """D^-1/2 (A + I) D^-1/2 X (Kipf & Welling 2017, eq. 2) through :func:`propagate`."""
    edge_coef, self_coef = gcn_coefficients(graph, add_self_loops)
    out = propagate(graph, gather(graph, x), edge_coef)
    return out + _expand(self_coef, x).astype(x.dtype) * x


def pool(graph: Graph, x, aggr: str = "sum"):
    """Readout: sum/mean/max of real node rows per graph -> [G, ...]."""
    g, w = graph.num_graphs, graph.node_mask.astype(x.dtype)
    if aggr == "sum":
        return segment_sum(x * _expand(w, x), graph.node_graph, g, True)
    if aggr == "mean":
        return segment_mean(x, graph.node_graph, g, True, weights=w)
    if aggr == "max":
        return segment_max(jnp.where(_expand(graph.node_mask, x), x, -jnp.inf), graph.node_graph, g, True)
    raise ValueError(f"aggr={aggr!r}; choose one of {', '.join(AGGREGATIONS)}")


def _expand(v, like):
    """Append trailing singleton axes to v so it broadcasts against `like` along the leading axes."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


# --------------------------------------------------------------------------------------------
# Host-side normalisation (numpy or jnp through `xp`).
# --------------------------------------------------------------------------------------------

def gcn_norm(senders, receivers, edge_weight, num_nodes: int, add_self_loops: bool = True, xp=np):
    """PyG ``gcn_norm``: deg_i = sum of weights into i (+1 for the self-loop); coefficient of edge
    j->i is deg_j^-1/2 w_ji deg_i^-1/2, of the self-loop deg_i^-1. Edges must contain no self-loops
    (the self-loop is added node-wise, as ``add_remaining_self_loops`` with fill value 1 does).
    Returns ``(edge_coef [E], self_coef [N])``; ``self_coef`` is 0 without self-loops.
    """
    w = edge_weight.astype(xp.float32) if hasattr(edge_weight, "astype") else xp.asarray(edge_weight, xp.float32)
    if xp is np:
        deg = np.zeros(num_nodes, np.float32)
        np.add.at(deg, receivers, w)
    else:
        deg = jax.ops.segment_sum(w, receivers, num_segments=num_nodes)
    loop = 1.0 if add_self_loops else 0.0
    deg = deg + loop
    dinv = xp.where(deg > 0, 1.0 / xp.sqrt(xp.where(deg > 0, deg, 1.0)), 0.0).astype(xp.float32)
    edge_coef = dinv[senders] * w * dinv[receivers]
    self_coef = (loop * dinv * dinv).astype(xp.float32)
    return edge_coef, self_coef


def with_norms(graph: Graph, self_loops: bool = True, no_self_loops: bool = False) -> Graph:
    """Attach host-precomputed GCN coefficients (with and/or without self-loops) to a numpy Graph."""
    norm = dict(graph.norm or {})
    s, r, w = np.asarray(graph.senders), np.asarray(graph.receivers), np.asarray(graph.edge_weight)
    if self_loops:
        norm["gcn_edge"], norm["gcn_self"] = gcn_norm(s, r, w, graph.num_nodes, True)
    if no_self_loops:
        norm["gcn_noloop_edge"], norm["gcn_noloop_self"] = gcn_norm(s, r, w, graph.num_nodes, False)
    return graph.replace(norm=norm)


def dense_gcn_matrix(senders, receivers, edge_weight, num_nodes: int, add_self_loops: bool = True):
    """Dense D^-1/2 (A + I) D^-1/2 (numpy), with A[i, j] = weight of edge j -> i. For small graphs."""
    a = np.zeros((num_nodes, num_nodes), np.float64)
    np.add.at(a, (np.asarray(receivers), np.asarray(senders)), np.asarray(edge_weight, np.float64))
    if add_self_loops:
        a = a + np.eye(num_nodes)
    deg = a.sum(1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return dinv[:, None] * a * dinv[None, :]


# --------------------------------------------------------------------------------------------
# Host-side construction, sorting, padding, batching.
# --------------------------------------------------------------------------------------------

def canonical_edges(senders, receivers, num_nodes: int, edge_weight=None, symmetrize: bool = False,
                    edges=None):
    """Drop self-loops, optionally add reverse edges, merge duplicates, sort by (receiver, sender).

    Returns ``(senders, receivers, edge_weight, edges)`` as numpy int32/float32 (``edges`` features
    follow their edge; duplicates keep the first occurrence's features and summed weight is *not*
    used: duplicate edges keep the first weight, as PyG's ``coalesce`` would for an unweighted graph).
    """
    s = np.asarray(senders, np.int64).reshape(-1)
    r = np.asarray(receivers, np.int64).reshape(-1)
    w = np.ones(s.shape, np.float32) if edge_weight is None else np.asarray(edge_weight, np.float32).reshape(-1)
    if s.size and (min(s.min(), r.min()) < 0 or max(s.max(), r.max()) >= num_nodes):
        raise UserError(f"edge index out of range for a graph of {num_nodes} nodes; check the edge list")
    if symmetrize:
        s, r = np.concatenate([s, r]), np.concatenate([r, s])
        w = np.concatenate([w, w])
        if edges is not None:
            edges = np.concatenate([edges, edges])
    keep = s != r
    s, r, w = s[keep], r[keep], w[keep]
    if edges is not None:
        edges = np.asarray(edges)[keep]
    key = r * num_nodes + s
    _, first = np.unique(key, return_index=True)   # sorted by key = (receiver, sender)
    s, r, w = s[first], r[first], w[first]
    if edges is not None:
        edges = edges[first]
    return s.astype(np.int32), r.astype(np.int32), w.astype(np.float32), edges


def sort_by_receiver(senders, receivers, *edge_arrays):
    """Stable sort of edges by (receiver, sender); returns the permuted arrays."""
    order = np.lexsort((np.asarray(senders), np.asarray(receivers)))
    return tuple(np.asarray(a)[order] for a in (senders, receivers) + edge_arrays)


@dataclasses.dataclass(frozen=True)
class Budget:
    """A padding size: total nodes, edges and graphs of a padded batch (padding included)."""
    n_node: int
    n_edge: int
    n_graph: int = 2

    def fits(self, n_node: int, n_edge: int, n_graph: int) -> bool:
        # One node and one graph are reserved for padding.
        return n_node + 1 <= self.n_node and n_edge <= self.n_edge and n_graph + 1 <= self.n_graph


def _round_up(v: int, m: int) -> int:
    return int(-(-int(v) // m) * m)


class BucketLadder:
    """A short ladder of padding budgets, smallest first; :meth:`fit` picks the smallest that fits.

    ``from_max(max_nodes, max_edges, max_graphs, num_buckets)`` builds budgets halving from the
    maximum, rounded up to ``multiple``. ``settings`` names the config keys that set the maximum;
    they appear in the error a too-large batch raises.
    """

    def __init__(self, budgets: Sequence[Budget], settings=("data.max_nodes", "data.max_edges", "data.max_graphs")):
        if not budgets:
            raise ValueError("a BucketLadder needs at least one budget")
        self.budgets = tuple(sorted(budgets, key=lambda b: (b.n_node, b.n_edge, b.n_graph)))
        self.settings = tuple(settings)

    @classmethod
    def from_max(cls, max_nodes: int, max_edges: int, max_graphs: int = 2, num_buckets: int = 4,
                 multiple: int = 8, settings=("data.max_nodes", "data.max_edges", "data.max_graphs")):
        budgets = []
        for k in reversed(range(num_buckets)):
            f = 2 ** k
            budgets.append(Budget(max(_round_up(max_nodes / f, multiple), 2),
                                  _round_up(max_edges / f, multiple), max_graphs))
        return cls(sorted(set(budgets), key=lambda b: b.n_node), settings)

    def __len__(self):
        return len(self.budgets)

    def fit(self, n_node: int, n_edge: int, n_graph: int = 1) -> Budget:
        for b in self.budgets:
            if b.fits(n_node, n_edge, n_graph):
                return b
        big = self.budgets[-1]
        raise GraphBudgetError(
            f"graph batch needs {n_node} nodes, {n_edge} edges, {n_graph} graphs (+1 padding node and "
            f"graph) but the largest padding budget holds {big.n_node}/{big.n_edge}/{big.n_graph}; raise "
            f"{self.settings[0]}, {self.settings[1]} or {self.settings[2]} (or lower the batch size)")


def _pad_rows(a, n):
    if a is None:
        return None
    return jax.tree.map(lambda v: np.concatenate([np.asarray(v), np.zeros((n - v.shape[0],) + v.shape[1:], np.asarray(v).dtype)]), a)


def pad(gt: jraph.GraphsTuple, budget: Budget, setting: Optional[Sequence[str]] = None,
        edge_weight=None) -> Graph:
    """Pad a host (numpy) ``GraphsTuple`` whose edges are sorted by receiver within the batch to
    ``budget``; returns a numpy :class:`Graph` with masks. Raises :class:`GraphBudgetError` if it
    does not fit."""
    n_node = np.asarray(gt.n_node, np.int32)
    n_edge = np.asarray(gt.n_edge, np.int32)
    nn_, ne, ng = int(n_node.sum()), int(n_edge.sum()), int(n_node.shape[0])
    if not budget.fits(nn_, ne, ng):
        BucketLadder([budget], setting or ("data.max_nodes", "data.max_edges", "data.max_graphs")).fit(nn_, ne, ng)
    N, E, G = budget.n_node, budget.n_edge, budget.n_graph
    s = np.full(E, nn_, np.int32)
    r = np.full(E, nn_, np.int32)
    s[:ne], r[:ne] = gt.senders, gt.receivers
    w = np.zeros(E, np.float32)
    w[:ne] = 1.0 if edge_weight is None else edge_weight
    node_graph = np.full(N, ng, np.int32)
    node_graph[:nn_] = np.repeat(np.arange(ng, dtype=np.int32), n_node)
    pad_n_node = np.zeros(G, np.int32)
    pad_n_node[:ng], pad_n_node[ng] = n_node, N - nn_
    pad_n_edge = np.zeros(G, np.int32)
    pad_n_edge[:ng], pad_n_edge[ng] = n_edge, E - ne
    is_sorted = bool(np.all(np.diff(r) >= 0))
    return Graph(
        nodes=_pad_rows(gt.nodes, N), edges=_pad_rows(gt.edges, E), globals=_pad_rows(gt.globals, G),
        senders=s, receivers=r, edge_weight=w,
        node_mask=np.arange(N) < nn_, edge_mask=np.arange(E) < ne, node_graph=node_graph,
        graph_mask=np.arange(G) < ng, n_node=pad_n_node, n_edge=pad_n_edge, norm=None,
        sorted_receivers=is_sorted)


def from_edges(senders, receivers, num_nodes: int, nodes=None, edge_weight=None, symmetrize=False,
               budget: Optional[Budget] = None, norms: bool = True, edges=None, globals=None) -> Graph:
    """One host graph from an edge list: canonicalised (no self-loops, deduplicated, sorted by
    receiver), padded to ``budget`` (default: one padding node, edges rounded to a multiple of 8),
    with GCN coefficients precomputed (``norms``)."""
    s, r, w, e = canonical_edges(senders, receivers, num_nodes, edge_weight, symmetrize, edges)
    gt = jraph.GraphsTuple(nodes=nodes, edges=e, senders=s, receivers=r,
                           globals=None if globals is None else np.asarray(globals)[None],
                           n_node=np.array([num_nodes], np.int32), n_edge=np.array([len(s)], np.int32))
    if budget is None:
        budget = Budget(num_nodes + 1, _round_up(max(len(s), 1), 8), 2)
    g = pad(gt, budget, edge_weight=w)
    return with_norms(g) if norms else g


def batch(graphs: Sequence[jraph.GraphsTuple], budget: Budget, setting=None, norms: bool = True) -> Graph:
    """Concatenate host graphs (each with edges sorted by receiver) and pad them to ``budget``."""
    gt = jraph.batch_np(list(graphs))
    g = pad(gt, budget, setting)
    return with_norms(g) if norms else g


def to_device(graph: Graph) -> Graph:
    return jax.tree.map(jnp.asarray, graph)


STRUCTURE_KEYS = ("senders", "receivers", "edge_weight", "node_mask", "edge_mask", "node_graph", "graph_mask",
                  "n_node", "n_edge")
EDGE_KEYS = ("senders", "receivers", "edge_weight", "edge_mask")


def to_arrays(graph: Graph, prefix: str = "") -> dict:
    """A flat dict of the graph's arrays (structure, ``norm_<k>``, and ``nodes``/``edges``/``globals``
    when they are arrays): the form a task hands the trainer as (part of) a batch."""
    out = {prefix + k: getattr(graph, k) for k in STRUCTURE_KEYS}
    for k, v in (graph.norm or {}).items():
        out[f"{prefix}norm_{k}"] = v
    for k in ("nodes", "edges", "globals"):
        v = getattr(graph, k)
        if v is not None and not isinstance(v, dict):
            out[prefix + k] = v
    return out


def from_arrays(d: dict, prefix: str = "", sorted_receivers: bool = True) -> Graph:
    """Inverse of :func:`to_arrays` (works on traced arrays inside jit)."""
    norm = {k[len(prefix) + 5:]: v for k, v in d.items() if k.startswith(prefix + "norm_")}
    return Graph(nodes=d.get(prefix + "nodes"), edges=d.get(prefix + "edges"), globals=d.get(prefix + "globals"),
                 norm=norm or None, sorted_receivers=sorted_receivers,
                 **{k: d[prefix + k] for k in STRUCTURE_KEYS})


def array_axes(d: dict, prefix: str = "", edge_sharded: bool = False, lead=()) -> dict:
    """Logical axes for each array of :func:`to_arrays`: replicated, or edge arrays over ``EDGES``.
    ``lead`` prepends axes (e.g. ``("batch",)`` for stacked sub-batches)."""
    edge_keys = {prefix + k for k in EDGE_KEYS} | {prefix + "edges", prefix + "norm_gcn_edge",
                                                   prefix + "norm_gcn_noloop_edge"}
    out = {}
    for k, v in d.items():
        nd = np.ndim(v) - len(lead)
        if edge_sharded and k in edge_keys:
            out[k] = tuple(lead) + (axes.EDGES,) + (None,) * (nd - 1)
        else:
            out[k] = tuple(lead) + (None,) * nd if lead else None
    return out


def unpad_nodes(graph: Graph, x):
    """Rows of real nodes only (host)."""
    return np.asarray(x)[np.asarray(graph.node_mask)]


__all__ = [
    "AGGREGATIONS", "Budget", "array_axes", "from_arrays", "to_arrays", "BucketLadder", "Graph", "GraphBudgetError", "batch", "canonical_edges",
    "degree", "dense_gcn_matrix", "edge_softmax", "edge_softmax_with_self", "from_edges", "gather", "gcn_coefficients", "gcn_norm",
    "normalized_adjacency_matmul", "pad", "pool", "propagate", "segment_max", "segment_mean",
    "segment_softmax", "segment_sum", "sort_by_receiver", "to_device", "unpad_nodes", "with_norms",
]

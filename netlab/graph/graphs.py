"""Static-shape graphs and the one (jittable) message-passing core that every graph layer uses.

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
Building, padding and batching graphs on the host lives in :mod:`netlab.graph.padding`.

Core. :func:`propagate` aggregates per-edge messages at receivers (sum/mean/max) with the
sortedness hint; :func:`segment_softmax` normalises per-edge logits over each receiver's incoming
edges. Messages are annotated with the logical axis ``EDGES``: when a mesh + rules map ``edges``
onto devices (the edge-sharded full-batch mode), each device aggregates its edge shard into a full
node array and XLA sums the partial aggregates with one all-reduce.

Precision: softmax normalisers, degrees and counts accumulate in float32, or in float64 when their
inputs are float64 (a ``jax_enable_x64`` run stays float64 end to end); normalisation coefficients
are computed in the precision of the features they scale (float32 at least), recomputing a less
precise host copy rather than rounding float64 features through float32 coefficients.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import struct

from netlab.registry import check_choice
from netlab.sharding import axes

AGGREGATIONS = ("sum", "mean", "max")
STRUCTURE_KEYS = (
    "senders",
    "receivers",
    "edge_weight",
    "node_mask",
    "edge_mask",
    "node_graph",
    "graph_mask",
    "n_node",
    "n_edge",
)
EDGE_KEYS = ("senders", "receivers", "edge_weight", "edge_mask")


@struct.dataclass
class Graph:
    """A padded graph (or batch of graphs) with masks; see the module docstring for conventions."""

    nodes: Any  # node features [N, ...] (or a dict of them), padding rows zero
    senders: Any  # [E] int32
    receivers: Any  # [E] int32, sorted ascending when sorted_receivers
    edge_weight: Any  # [E] float, 0 on padding edges
    node_mask: Any  # [N] bool
    edge_mask: Any  # [E] bool
    node_graph: Any  # [N] int32 graph index of every node
    graph_mask: Any  # [G] bool
    n_node: Any  # [G] int32
    n_edge: Any  # [G] int32
    edges: Any = None  # edge features [E, ...] or None
    globals: Any = None  # graph features [G, ...] or None
    norm: Any = None  # dict of host-precomputed normalisations (e.g. gcn_edge, gcn_self)
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
        return jraph.GraphsTuple(
            nodes=self.nodes,
            edges=self.edges,
            receivers=self.receivers,
            senders=self.senders,
            globals=self.globals,
            n_node=self.n_node,
            n_edge=self.n_edge,
        )


def from_arrays(d: dict, prefix: str = "", sorted_receivers: bool = True) -> Graph:
    """The :class:`Graph` in a flat dict of arrays (``padding.to_arrays``); works inside jit."""
    norm = {k[len(prefix) + 5 :]: v for k, v in d.items() if k.startswith(prefix + "norm_")}
    return Graph(
        nodes=d.get(prefix + "nodes"),
        edges=d.get(prefix + "edges"),
        globals=d.get(prefix + "globals"),
        norm=norm or None,
        sorted_receivers=sorted_receivers,
        **{k: d[prefix + k] for k in STRUCTURE_KEYS},
    )


def accum_dtype(*dtypes):
    """float32 for float32 / bfloat16 / integer inputs, float64 when any input is float64."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


# --------------------------------------------------------------------------------------------
# The message-passing core.
# --------------------------------------------------------------------------------------------


def _edge_constrain(x):
    return axes.constrain(x, axes.EDGES, *([None] * (x.ndim - 1)))


def _node_constrain(x):
    return axes.constrain(x, axes.NODES, *([None] * (x.ndim - 1)))


def gather(graph: Graph, x, at: str = "senders"):
    """Node rows at the edges' senders (or receivers), annotated as edge-sharded activations."""
    idx = graph.senders if at == "senders" else graph.receivers
    srt = at != "senders" and graph.sorted_receivers
    return _edge_constrain(rows(x, _edge_constrain(idx), srt))


def rows(x, idx, indices_are_sorted: bool = False):
    """x[idx] along axis 0 for indices known to be in range (every index of a Graph is < N).

    `jnp.take`'s default mode ("fill") guards each row with a compare + select over the whole
    [E, ...] result and its scatter-add transpose: on XLA:CPU that select cost as much as the
    gather itself in the GAT step on the 100k-node graph (bench/graph.py docstring)."""
    return (
        jnp.asarray(x).at[idx].get(mode="promise_in_bounds", indices_are_sorted=indices_are_sorted)
    )


def _mode(in_bounds: bool):
    """Ids known to be < num_segments (a Graph's senders / receivers): XLA drops the bounds check
    that the default mode ("fill or drop") puts on the scatter and on its transpose's gather (a
    compare + select over the whole [E, ...] array in the GAT step, bench/graph.py)."""
    return "promise_in_bounds" if in_bounds else None


def segment_sum(
    data, segment_ids, num_segments: int, indices_are_sorted: bool = False, in_bounds=False
):
    return jax.ops.segment_sum(
        data,
        segment_ids,
        num_segments=num_segments,
        indices_are_sorted=indices_are_sorted,
        mode=_mode(in_bounds),
    )


def segment_max(
    data, segment_ids, num_segments: int, indices_are_sorted: bool = False, in_bounds=False
):
    """Segment max with empty segments set to 0 (not -inf)."""
    out = jax.ops.segment_max(
        data,
        segment_ids,
        num_segments=num_segments,
        indices_are_sorted=indices_are_sorted,
        mode=_mode(in_bounds),
    )
    return jnp.where(jnp.isfinite(out), out, jnp.zeros_like(out))


def segment_mean(
    data,
    segment_ids,
    num_segments: int,
    indices_are_sorted: bool = False,
    weights=None,
    in_bounds=False,
):
    """Mean over each segment's rows (rows with weight 0 are not counted); empty segments give 0."""
    if weights is None:
        weights = jnp.ones(data.shape[:1], data.dtype)
    total = segment_sum(
        data * _expand(weights, data), segment_ids, num_segments, indices_are_sorted, in_bounds
    )
    count = segment_sum(
        weights.astype(accum_dtype(data.dtype)),
        segment_ids,
        num_segments,
        indices_are_sorted,
        in_bounds,
    )
    return total / _expand(jnp.maximum(count, 1.0), total).astype(total.dtype)


def segment_softmax(
    logits, segment_ids, num_segments: int, indices_are_sorted: bool = False, mask=None
):
    """Softmax of per-edge logits [E, ...] over the edges that share a segment (receiver).

    Masked-out rows get weight 0 and do not enter the normaliser; a segment with no unmasked row
    yields zeros. Accumulates in float32 (float64 for float64 logits).
    """
    dtype = logits.dtype
    logits = logits.astype(accum_dtype(dtype))
    if mask is not None:
        logits = jnp.where(_expand(mask, logits), logits, -jnp.inf)
    seg_max = jax.ops.segment_max(
        logits,
        segment_ids,
        num_segments=num_segments,
        indices_are_sorted=indices_are_sorted,
        mode="promise_in_bounds",  # as `rows` below: the ids are < num_segments
    )
    seg_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(seg_max), seg_max, 0.0))
    ex = jnp.exp(logits - rows(seg_max, segment_ids, indices_are_sorted))
    if mask is not None:
        ex = jnp.where(_expand(mask, ex), ex, 0.0)
    denom = segment_sum(ex, segment_ids, num_segments, indices_are_sorted, in_bounds=True)
    out = ex / rows(jnp.where(denom > 0, denom, 1.0), segment_ids, indices_are_sorted)
    return out.astype(dtype)


def propagate(graph: Graph, messages, norm=None, aggr: str = "sum"):
    """Aggregate per-edge ``messages`` [E, ...] at the receivers -> [N, ...].

    ``norm`` [E] (or [E, H] broadcasting against messages) scales each message first. ``aggr`` is
    ``sum`` (padding edges contribute only to the padding node), ``mean`` (over real incoming edges)
    or ``max`` (over real incoming edges; nodes without any give 0). This is the shared
    message-passing step of every layer in netlab.graph: A_norm @ X is
    ``propagate(g, gather(g, x), g.norm["gcn_edge"])`` plus the self term.
    """
    check_choice("aggr", aggr, AGGREGATIONS)
    messages = _edge_constrain(messages)
    if norm is not None:
        messages = messages * _expand(norm, messages).astype(messages.dtype)
    n, srt = graph.num_nodes, graph.sorted_receivers
    recv = _edge_constrain(graph.receivers)
    if aggr == "sum":
        out = segment_sum(messages, recv, n, srt, in_bounds=True)
    elif aggr == "mean":
        w = graph.edge_mask.astype(messages.dtype)
        out = segment_mean(messages, recv, n, srt, weights=w, in_bounds=True)
    else:
        masked = jnp.where(_expand(graph.edge_mask, messages), messages, -jnp.inf)
        out = segment_max(masked, recv, n, srt, in_bounds=True)
    return _node_constrain(out)


def edge_softmax(graph: Graph, logits):
    """Softmax of per-edge logits over each receiver's incoming real edges (GAT attention)."""
    return segment_softmax(
        _edge_constrain(logits),
        _edge_constrain(graph.receivers),
        graph.num_nodes,
        graph.sorted_receivers,
        mask=graph.edge_mask,
    )


def edge_softmax_with_self(graph: Graph, edge_logits, self_logits):
    """Softmax over each receiver's incoming real edges *and* its self-loop (GAT with self-loops).

    ``edge_logits`` [E, ...] and ``self_logits`` [N, ...]; returns ``(edge_attn, self_attn)`` that
    sum to 1 per node. The self-loop is kept out of the edge list (see module docstring), so its
    logit joins the per-receiver max and normaliser here. Accumulates in float32 (float64 for
    float64 logits).
    """
    dtype = edge_logits.dtype
    acc = accum_dtype(edge_logits.dtype, self_logits.dtype)
    el = _edge_constrain(edge_logits.astype(acc))
    sl = self_logits.astype(acc)
    recv, n, srt = _edge_constrain(graph.receivers), graph.num_nodes, graph.sorted_receivers
    mask = _expand(graph.edge_mask, el)
    el = jnp.where(mask, el, -jnp.inf)
    m = jnp.maximum(
        jax.ops.segment_max(
            el, recv, num_segments=n, indices_are_sorted=srt, mode="promise_in_bounds"
        ),
        sl,
    )
    m = jax.lax.stop_gradient(_node_constrain(m))
    ex = jnp.where(mask, jnp.exp(el - rows(m, recv, srt)), 0.0)
    es = jnp.exp(sl - m)
    denom = _node_constrain(segment_sum(ex, recv, n, srt, in_bounds=True))
    denom = denom + es
    return (ex / rows(denom, recv, srt)).astype(dtype), (es / denom).astype(dtype)


def degree(graph: Graph, weighted: bool = True, dtype=None):
    """In-degree at each receiver (sum of edge weights, padding edges excluded) [N], in ``dtype``
    (default: float32, or float64 for float64 edge weights)."""
    w = graph.edge_weight if weighted else graph.edge_mask
    if dtype is None:
        dtype = accum_dtype(graph.edge_weight.dtype)
    return segment_sum(w.astype(dtype), graph.receivers, graph.num_nodes, graph.sorted_receivers)


def gcn_norm(
    senders, receivers, edge_weight, num_nodes: int, add_self_loops: bool = True, xp=np, dtype=None
):
    """PyG ``gcn_norm``: deg_i = sum of weights into i (+1 for the self-loop); coefficient of edge
    j->i is deg_j^-1/2 w_ji deg_i^-1/2, of the self-loop deg_i^-1. Edges must contain no self-loops
    (the self-loop is added node-wise, as ``add_remaining_self_loops`` with fill value 1 does).
    Returns ``(edge_coef [E], self_coef [N])``; ``self_coef`` is 0 without self-loops. Computed in
    ``dtype`` (default: float32, or float64 for float64 weights), with numpy or ``xp=jnp``.
    """
    if dtype is None:
        dtype = np.result_type(getattr(edge_weight, "dtype", np.float32), np.float32)
    w = xp.asarray(edge_weight).astype(dtype)
    if xp is np:
        deg = np.zeros(num_nodes, dtype)
        np.add.at(deg, receivers, w)
    else:
        deg = jax.ops.segment_sum(w, receivers, num_segments=num_nodes)
    loop = 1.0 if add_self_loops else 0.0
    deg = deg + loop
    dinv = xp.where(deg > 0, 1.0 / xp.sqrt(xp.where(deg > 0, deg, 1.0)), 0.0).astype(dtype)
    edge_coef = dinv[senders] * w * dinv[receivers]
    self_coef = (loop * dinv * dinv).astype(dtype)
    return edge_coef, self_coef


def gcn_coefficients(graph: Graph, add_self_loops: bool = True, dtype=None):
    """``(edge_coef [E], self_coef [N])`` of D^-1/2 (A + I) D^-1/2 in ``dtype`` (default: the edge
    weights' precision, float32 at least). The host-precomputed copy (``padding.with_norms``) is
    used when it is at least that precise; otherwise (e.g. float32 coefficients of a graph whose
    features are float64) they are recomputed here, so a float64 layer never multiplies by float32
    coefficients."""
    key = "gcn" if add_self_loops else "gcn_noloop"
    if dtype is None:
        dtype = accum_dtype(graph.edge_weight.dtype)
    if graph.norm is not None and f"{key}_edge" in graph.norm:
        edge, self_ = graph.norm[f"{key}_edge"], graph.norm[f"{key}_self"]
        if jnp.promote_types(edge.dtype, dtype) == edge.dtype:
            return edge, self_
    return gcn_norm(
        graph.senders,
        graph.receivers,
        graph.edge_weight,
        graph.num_nodes,
        add_self_loops=add_self_loops,
        xp=jnp,
        dtype=dtype,
    )


def normalized_adjacency_matmul(graph: Graph, x, add_self_loops: bool = True):
    """D^-1/2 (A + I) D^-1/2 X (Kipf & Welling 2017, eq. 2) through :func:`propagate`, with
    coefficients at least as precise as ``x``."""
    dtype = accum_dtype(x.dtype, graph.edge_weight.dtype)
    edge_coef, self_coef = gcn_coefficients(graph, add_self_loops, dtype)
    out = propagate(graph, gather(graph, x), edge_coef)
    return out + _expand(self_coef, x).astype(x.dtype) * x


def pool(graph: Graph, x, aggr: str = "sum"):
    """Readout: sum/mean/max of real node rows per graph -> [G, ...]."""
    check_choice("readout", aggr, AGGREGATIONS)
    g, w = graph.num_graphs, graph.node_mask.astype(x.dtype)
    if aggr == "sum":
        return segment_sum(x * _expand(w, x), graph.node_graph, g, True)
    if aggr == "mean":
        return segment_mean(x, graph.node_graph, g, True, weights=w)
    masked = jnp.where(_expand(graph.node_mask, x), x, -jnp.inf)
    return segment_max(masked, graph.node_graph, g, True)


def _expand(v, like):
    """v with trailing singleton axes, so it broadcasts against `like` along the leading axes."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


__all__ = [
    "AGGREGATIONS",
    "EDGE_KEYS",
    "STRUCTURE_KEYS",
    "Graph",
    "accum_dtype",
    "degree",
    "edge_softmax",
    "edge_softmax_with_self",
    "from_arrays",
    "gather",
    "gcn_coefficients",
    "gcn_norm",
    "normalized_adjacency_matmul",
    "pool",
    "propagate",
    "segment_max",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
]

"""Host-side (numpy) graph building: canonical edge lists, padding budgets, batching, batch dicts.

Everything here runs once on the host before a jitted step; the jittable core is
:mod:`netlab.graph.graphs`. A graph is canonicalised (no self-loops, duplicates merged, edges sorted
by (receiver, sender)), padded to a :class:`Budget` (see the conventions in ``graphs``), and given
host-precomputed GCN coefficients (PyG ``cached=True``).

Padding budgets. :class:`BucketLadder` holds a short ladder of (nodes, edges, graphs) budgets so a
jitted step compiles once per bucket; a batch that exceeds the largest bucket raises
:class:`GraphBudgetError`, a one-line message naming the config setting to raise.

Float arrays (edge weights, coefficients, features) are float32 unless a ``dtype`` is given: a
float64 run builds them in float64 so that nothing is rounded to float32 on the way.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from netlab.errors import UserError
from netlab.graph.graphs import EDGE_KEYS, STRUCTURE_KEYS, Graph, gcn_norm
from netlab.sharding import axes

SETTINGS = ("data.max_nodes", "data.max_edges", "data.max_graphs")


class GraphBudgetError(UserError):
    """A graph or batch of graphs does not fit its padding budget."""


def round_up(v, m: int) -> int:
    """The smallest multiple of ``m`` that is >= ``v``."""
    return int(-(-int(v) // m) * m)


def canonical_edges(
    senders,
    receivers,
    num_nodes: int,
    edge_weight=None,
    symmetrize: bool = False,
    edges=None,
    dtype=np.float32,
):
    """Drop self-loops, optionally add reverse edges, merge duplicates, sort by (receiver, sender).

    Returns ``(senders, receivers, edge_weight, edges)`` as numpy int32 / ``dtype`` (``edges``
    features follow their edge; a duplicate keeps its first occurrence's weight and features, as
    PyG's ``coalesce`` does for an unweighted graph).
    """
    s = np.asarray(senders, np.int64).reshape(-1)
    r = np.asarray(receivers, np.int64).reshape(-1)
    w = (
        np.ones(s.shape, dtype)
        if edge_weight is None
        else np.asarray(edge_weight, dtype).reshape(-1)
    )
    if s.size and (min(s.min(), r.min()) < 0 or max(s.max(), r.max()) >= num_nodes):
        raise UserError(
            f"edge index out of range for a graph of {num_nodes} nodes; check the edge list"
        )
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
    _, first = np.unique(key, return_index=True)  # sorted by key = (receiver, sender)
    s, r, w = s[first], r[first], w[first]
    if edges is not None:
        edges = edges[first]
    return s.astype(np.int32), r.astype(np.int32), w.astype(dtype), edges


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


class BucketLadder:
    """A short ladder of padding budgets, smallest first; :meth:`fit` picks the smallest that fits.

    ``from_max(max_nodes, max_edges, max_graphs, num_buckets)`` builds budgets halving from the
    maximum, rounded up to ``multiple``. ``settings`` names the config keys that set the maximum;
    they appear in the error a too-large batch raises.
    """

    def __init__(self, budgets: Sequence[Budget], settings=SETTINGS):
        if not budgets:
            raise UserError("a BucketLadder needs at least one budget")
        self.budgets = tuple(sorted(budgets, key=lambda b: (b.n_node, b.n_edge, b.n_graph)))
        self.settings = tuple(settings)

    @classmethod
    def from_max(
        cls,
        max_nodes: int,
        max_edges: int,
        max_graphs: int = 2,
        num_buckets: int = 4,
        multiple: int = 8,
        settings=SETTINGS,
    ):
        budgets = []
        for k in reversed(range(num_buckets)):
            f = 2**k
            budgets.append(
                Budget(
                    max(round_up(max_nodes / f, multiple), 2),
                    round_up(max_edges / f, multiple),
                    max_graphs,
                )
            )
        return cls(sorted(set(budgets), key=lambda b: b.n_node), settings)

    def __len__(self):
        return len(self.budgets)

    @property
    def largest(self) -> Budget:
        return self.budgets[-1]

    def fit(self, n_node: int, n_edge: int, n_graph: int = 1) -> Budget:
        for b in self.budgets:
            if b.fits(n_node, n_edge, n_graph):
                return b
        big = self.largest
        raise GraphBudgetError(
            f"graph batch needs {n_node} nodes, {n_edge} edges, {n_graph} graphs (+1 padding node "
            f"and graph) but the largest padding budget holds {big.n_node}/{big.n_edge}/"
            f"{big.n_graph}; raise {self.settings[0]}, {self.settings[1]} or {self.settings[2]} "
            "(or lower the batch size)"
        )


def _pad_rows(a, n):
    if a is None:
        return None

    def one(v):
        v = np.asarray(v)
        return np.concatenate([v, np.zeros((n - v.shape[0],) + v.shape[1:], v.dtype)])

    return jax.tree.map(one, a)


def pad(
    gt: jraph.GraphsTuple,
    budget: Budget,
    setting: Optional[Sequence[str]] = None,
    edge_weight=None,
    dtype=np.float32,
) -> Graph:
    """Pad a host (numpy) ``GraphsTuple`` whose edges are sorted by receiver within the batch to
    ``budget``; returns a numpy :class:`Graph` with masks. Raises :class:`GraphBudgetError` if it
    does not fit."""
    n_node = np.asarray(gt.n_node, np.int32)
    n_edge = np.asarray(gt.n_edge, np.int32)
    nn_, ne, ng = int(n_node.sum()), int(n_edge.sum()), int(n_node.shape[0])
    if not budget.fits(nn_, ne, ng):
        BucketLadder([budget], setting or SETTINGS).fit(nn_, ne, ng)
    N, E, G = budget.n_node, budget.n_edge, budget.n_graph
    s = np.full(E, nn_, np.int32)
    r = np.full(E, nn_, np.int32)
    s[:ne], r[:ne] = gt.senders, gt.receivers
    w = np.zeros(E, dtype)
    w[:ne] = 1.0 if edge_weight is None else edge_weight
    node_graph = np.full(N, ng, np.int32)
    node_graph[:nn_] = np.repeat(np.arange(ng, dtype=np.int32), n_node)
    pad_n_node = np.zeros(G, np.int32)
    pad_n_node[:ng], pad_n_node[ng] = n_node, N - nn_
    pad_n_edge = np.zeros(G, np.int32)
    pad_n_edge[:ng], pad_n_edge[ng] = n_edge, E - ne
    is_sorted = bool(np.all(np.diff(r) >= 0))
    return Graph(
        nodes=_pad_rows(gt.nodes, N),
        edges=_pad_rows(gt.edges, E),
        globals=_pad_rows(gt.globals, G),
        senders=s,
        receivers=r,
        edge_weight=w,
        node_mask=np.arange(N) < nn_,
        edge_mask=np.arange(E) < ne,
        node_graph=node_graph,
        graph_mask=np.arange(G) < ng,
        n_node=pad_n_node,
        n_edge=pad_n_edge,
        norm=None,
        sorted_receivers=is_sorted,
    )


def with_norms(
    graph: Graph, self_loops: bool = True, no_self_loops: bool = False, dtype=None
) -> Graph:
    """Attach host-precomputed GCN coefficients (with and/or without self-loops) to a numpy Graph,
    in ``dtype`` (default: that of the edge weights)."""
    norm = dict(graph.norm or {})
    s, r, w = np.asarray(graph.senders), np.asarray(graph.receivers), np.asarray(graph.edge_weight)
    if self_loops:
        norm["gcn_edge"], norm["gcn_self"] = gcn_norm(s, r, w, graph.num_nodes, True, dtype=dtype)
    if no_self_loops:
        norm["gcn_noloop_edge"], norm["gcn_noloop_self"] = gcn_norm(
            s, r, w, graph.num_nodes, False, dtype=dtype
        )
    return graph.replace(norm=norm)


def dense_gcn_matrix(senders, receivers, edge_weight, num_nodes: int, add_self_loops: bool = True):
    """Dense D^-1/2 (A + I) D^-1/2 (numpy float64), A[i, j] = weight of edge j -> i; an oracle."""
    a = np.zeros((num_nodes, num_nodes), np.float64)
    np.add.at(a, (np.asarray(receivers), np.asarray(senders)), np.asarray(edge_weight, np.float64))
    if add_self_loops:
        a = a + np.eye(num_nodes)
    deg = a.sum(1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return dinv[:, None] * a * dinv[None, :]


def from_edges(
    senders,
    receivers,
    num_nodes: int,
    nodes=None,
    edge_weight=None,
    symmetrize=False,
    budget: Optional[Budget] = None,
    norms: bool = True,
    edges=None,
    globals=None,
    dtype=np.float32,
) -> Graph:
    """One host graph from an edge list: canonicalised (no self-loops, deduplicated, sorted by
    receiver), padded to ``budget`` (default: one padding node, edges rounded to a multiple of 8),
    with GCN coefficients precomputed (``norms``); weights and coefficients in ``dtype``."""
    s, r, w, e = canonical_edges(
        senders, receivers, num_nodes, edge_weight, symmetrize, edges, dtype=dtype
    )
    gt = jraph.GraphsTuple(
        nodes=nodes,
        edges=e,
        senders=s,
        receivers=r,
        globals=None if globals is None else np.asarray(globals)[None],
        n_node=np.array([num_nodes], np.int32),
        n_edge=np.array([len(s)], np.int32),
    )
    if budget is None:
        budget = Budget(num_nodes + 1, round_up(max(len(s), 1), 8), 2)
    g = pad(gt, budget, edge_weight=w, dtype=dtype)
    return with_norms(g) if norms else g


def batch(
    graphs: Sequence[jraph.GraphsTuple],
    budget: Budget,
    setting=None,
    norms: bool = True,
    dtype=np.float32,
) -> Graph:
    """Concatenate host graphs (each with edges sorted by receiver) and pad them to ``budget``."""
    gt = jraph.batch_np(list(graphs))
    g = pad(gt, budget, setting, dtype=dtype)
    return with_norms(g) if norms else g


def to_device(graph: Graph) -> Graph:
    return jax.tree.map(jnp.asarray, graph)


def to_arrays(graph: Graph, prefix: str = "") -> dict:
    """A flat dict of the graph's arrays (structure, ``norm_<k>``, and ``nodes``/``edges``/
    ``globals`` when they are arrays): the form a task hands the trainer as (part of) a batch.
    ``graphs.from_arrays`` is its inverse (inside jit)."""
    out = {prefix + k: getattr(graph, k) for k in STRUCTURE_KEYS}
    for k, v in (graph.norm or {}).items():
        out[f"{prefix}norm_{k}"] = v
    for k in ("nodes", "edges", "globals"):
        v = getattr(graph, k)
        if v is not None and not isinstance(v, dict):
            out[prefix + k] = v
    return out


def cast_floats(tree, dtype):
    """Every floating numpy leaf of ``tree`` cast to ``dtype`` (integer and bool leaves kept)."""

    def one(v):
        v = np.asarray(v)
        return v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v

    return jax.tree.map(one, tree)


def array_axes(d: dict, prefix: str = "", edge_sharded: bool = False, lead=()) -> dict:
    """Logical axes for each array of :func:`to_arrays`: replicated, or edge arrays over ``EDGES``.
    ``lead`` prepends axes (e.g. ``("batch",)`` for stacked sub-batches)."""
    edge_keys = {prefix + k for k in EDGE_KEYS} | {
        prefix + "edges",
        prefix + "norm_gcn_edge",
        prefix + "norm_gcn_noloop_edge",
    }
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
    "Budget",
    "BucketLadder",
    "GraphBudgetError",
    "SETTINGS",
    "array_axes",
    "batch",
    "canonical_edges",
    "cast_floats",
    "dense_gcn_matrix",
    "from_edges",
    "pad",
    "round_up",
    "sort_by_receiver",
    "to_arrays",
    "to_device",
    "unpad_nodes",
    "with_norms",
]

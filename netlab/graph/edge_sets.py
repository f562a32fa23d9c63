"""Extra edge sets that a model builds once on the host (`prepare_graph`) and carries in
``graph.norm``: DRew's hop-k lists, LASER's rewiring snapshots.

Each set is padded to a static size (its padding edges point at a padding node, weight 0) and
stored with its GCN coefficients under ``<name>_<key>``; `graph_with` swaps it in for the graph's
own edges inside the step, so any layer that reads a :class:`netlab.graph.graphs.Graph` can run
on it.
"""

from __future__ import annotations

import numpy as np

from netlab.errors import UserError
from netlab.graph.graphs import gcn_norm
from netlab.graph.padding import GraphBudgetError, round_up

KEYS = ("senders", "receivers", "weight", "gcn_edge", "gcn_self")


def real_edges(graph):
    """(senders, receivers, real node count, padded node count, edge dtype) of a numpy graph."""
    em = np.asarray(graph.edge_mask)
    s, r = np.asarray(graph.senders)[em], np.asarray(graph.receivers)[em]
    n = int(np.asarray(graph.node_mask).sum())
    return s, r, n, graph.num_nodes, np.asarray(graph.edge_weight).dtype


def add(norm: dict, name: str, senders, receivers, graph, size: int, knob: str, fix: str):
    """Pad (senders, receivers) to ``size`` edges (0: the next multiple of 128) and store them
    with their GCN coefficients (self-loops added) in ``norm`` under ``<name>_<key>``. More edges
    than an explicit ``size`` is a one-line :class:`GraphBudgetError` naming ``knob``."""
    _, _, n, big, dtype = real_edges(graph)
    size = size or round_up(max(len(senders), 1), 128)
    if len(senders) > size:
        raise GraphBudgetError(
            f"{name} has {len(senders)} edges but {knob}={size}; raise {knob} (or {fix})"
        )
    pad_node = min(n, big - 1)
    ps, pr = np.full(size, pad_node, np.int32), np.full(size, pad_node, np.int32)
    w = np.zeros(size, dtype)
    ps[: len(senders)], pr[: len(senders)], w[: len(senders)] = senders, receivers, 1
    edge, self_ = gcn_norm(ps, pr, w, big, True, dtype=dtype)
    for key, v in zip(KEYS, (ps, pr, w, edge, self_)):
        norm[f"{name}_{key}"] = v


def graph_with(graph, name: str, model: str):
    """``graph`` with its edges replaced by the stored edge set ``name`` (GCN coefficients
    included); a graph without it is a one-line error naming ``model``'s prepare_graph."""
    if graph.norm is None or f"{name}_senders" not in graph.norm:
        raise UserError(
            f"{model} needs edge set {name!r} precomputed on the host: build the graph with "
            f"{model}.prepare_graph(graph) (the node task does this)"
        )
    v = {key: graph.norm[f"{name}_{key}"] for key in KEYS}
    return graph.replace(
        senders=v["senders"],
        receivers=v["receivers"],
        edge_weight=v["weight"],
        edge_mask=v["weight"] > 0,
        edges=None,
        norm={"gcn_edge": v["gcn_edge"], "gcn_self": v["gcn_self"]},
    )

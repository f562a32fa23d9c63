"""Natural Graph Networks: de Haan, Cohen & Welling, "Natural Graph Networks" (NeurIPS 2020).

A layer is *natural* when for every isomorphism φ: G → G' the layer on G' composed with φ equals φ
composed with the layer on G. A local NGN (paper §4) builds the message kernel K_{v←w} of edge
w → v from its edge neighbourhood G_{vw} (the subgraph induced by v, w and their neighbours, with
v and w told apart), so that isomorphic edge neighbourhoods get the same kernel; then

    h'_v = ReLU( K^self_{c(v)} h_v + Σ_{w → v} K_{c(w→v)} h_w + b ).

This is the simplest version the paper describes: features are node-wise vectors (the trivial
representation of each neighbourhood's automorphism group, so any matrix commutes with the
automorphisms) and the kernel is indexed by the isomorphism class c of the neighbourhood, shared by
every edge of that class -- weight sharing by isomorphism class, where a message passing network
shares one kernel among all edges. The self kernel is indexed likewise by the class of the node's
1-hop neighbourhood (centre marked). The paper's more general instance lets a small GNN on G_{vw}
produce the kernel and carries non-trivial representations (features on the neighbourhood's
nodes); that is left out.

Classes are computed once per graph on the host (:meth:`NGN.prepare_graph`, called by the graph
task on each padded batch; cached per graph): networkx's Weisfeiler-Lehman graph hash of the
neighbourhood with a role attribute (receiver / sender / other; centre / other), reduced modulo
``num_kernels`` (kernels K_c = K₀ + ΔK_c, so a class shares K₀ with every other). The hash is an
isomorphism invariant, so naturality holds exactly; hash collisions (non-isomorphic neighbourhoods
with one WL hash, or equal residues) only share more weights. Edge neighbourhoods of two CSL graphs
differ (triangles for skip 2), so an NGN tells apart graphs 1-WL cannot.
"""

from __future__ import annotations

import hashlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import networkx as nx
import numpy as np

from netlab.errors import UserError
from netlab.graph import graph_patches as B
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import MODELS

PREFIX = "ngn"


def _hash(g: nx.Graph, num_kernels: int, iterations: int) -> int:
    h = nx.weisfeiler_lehman_graph_hash(g, node_attr="role", iterations=iterations)
    return int(hashlib.sha1(h.encode()).hexdigest(), 16) % num_kernels


def neighbourhood_classes(senders, receivers, n: int, num_kernels: int, iterations: int = 3):
    """(edge classes [E] aligned with the edge list, node classes [n]): the WL hash of each edge
    neighbourhood (receiver / sender roles) and of each node's 1-hop neighbourhood (centre role),
    modulo ``num_kernels``."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(np.asarray(senders).tolist(), np.asarray(receivers).tolist()))
    edge = np.zeros(len(senders), np.int32)
    for i, (w, v) in enumerate(zip(np.asarray(senders).tolist(), np.asarray(receivers).tolist())):
        sub = nx.Graph(g.subgraph({v, w} | set(g[v]) | set(g[w])))
        nx.set_node_attributes(sub, "o", "role")
        sub.nodes[v]["role"], sub.nodes[w]["role"] = "r", "s"
        edge[i] = _hash(sub, num_kernels, iterations)
    node = np.zeros(n, np.int32)
    for v in range(n):
        sub = nx.Graph(g.subgraph({v} | set(g[v])))
        nx.set_node_attributes(sub, "o", "role")
        sub.nodes[v]["role"] = "c"
        node[v] = _hash(sub, num_kernels, iterations)
    return edge, node


class NaturalConv(nn.Module):
    """One local NGN layer: per-class self and edge kernels (K₀ + ΔK_c), sum aggregation."""

    features: int
    num_kernels: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, edge_class, node_class):
        d_in, d, k = x.shape[-1], self.features, self.num_kernels
        init = nn.initializers.lecun_normal()
        base = self.param("edge_base", init, (d_in, d), self.param_dtype)
        delta = self.param("edge_delta", init, (k, d_in, d), self.param_dtype)
        sbase = self.param("self_base", init, (d_in, d), self.param_dtype)
        sdelta = self.param("self_delta", init, (k, d_in, d), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        dt = x.dtype
        # every node under every kernel [N, K, d], then each edge reads its sender's row
        per_kernel = jnp.einsum("nf,kfd->nkd", x, (base[None] + delta).astype(dt))
        msg = per_kernel[graph.senders, edge_class] * graph.edge_mask[:, None].astype(dt)
        agg = G.segment_sum(msg, graph.receivers, x.shape[0], graph.sorted_receivers)
        own = jnp.einsum("nf,nfd->nd", x, (sbase[None] + sdelta).astype(dt)[node_class])
        return own + agg + bias.astype(dt)


@MODELS.register("ngn")
class NGN(nn.Module):
    """Local NGN graph classifier: Linear encoder -> ``num_layers`` natural layers (ReLU) -> sum
    readout -> MLP head; ``nodes=True`` returns the node embeddings instead of logits."""

    TASK = "graph"
    hidden: int = 64
    num_classes: int = 2
    num_layers: int = 3
    num_kernels: int = 16
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.num_kernels < 1 or self.num_layers < 1:
            raise UserError(
                f"model.num_kernels={self.num_kernels}, num_layers={self.num_layers}: each must "
                "be >= 1"
            )
        super().__post_init__()

    def prepare_graph(self, graph):
        """The numpy batch with ``ngn_edge_class`` [E] and ``ngn_node_class`` [N] in
        ``graph.norm`` (padding edges and nodes: class 0)."""
        edge = np.zeros(graph.num_edges, np.int32)
        node = np.zeros(graph.num_nodes, np.int32)
        for lo, n, s, r, pos in B.split_graphs(graph):
            e, v = B.cached(neighbourhood_classes, (self.num_kernels,), s, r, n)
            edge[pos], node[lo : lo + n] = e, v
        norm = dict(graph.norm or {}, ngn_edge_class=edge, ngn_node_class=node)
        return graph.replace(norm=norm)

    @nn.compact
    def __call__(self, graph, x, train: bool = False, nodes: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if graph.norm is None or f"{PREFIX}_edge_class" not in graph.norm:
            raise UserError(
                "NGN needs its neighbourhood classes precomputed on the host: build the batch "
                "with NGN.prepare_graph(graph) (the graph task does this)"
            )
        ec, nc = graph.norm[f"{PREFIX}_edge_class"], graph.norm[f"{PREFIX}_node_class"]
        h = L.dense(self.hidden, True, "encoder", **kw)(x)
        for i in range(self.num_layers):
            h = nn.relu(
                NaturalConv(self.hidden, self.num_kernels, name=f"conv{i}", **kw)(graph, h, ec, nc)
            )
        h = h * graph.node_mask[:, None].astype(h.dtype)
        if nodes:
            return h
        out = L.Dropout(self.dropout)(G.pool(graph, h, "sum"), deterministic=not train)
        head = L.MLP((self.hidden, self.num_classes), name="head", **kw)
        return head(out) * graph.graph_mask[:, None].astype(out.dtype)


__all__ = ["NGN", "NaturalConv", "neighbourhood_classes"]

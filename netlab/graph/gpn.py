"""Graph Parsing Networks: Song et al., "Graph Parsing Networks" (ICLR 2024). A learned pooling
hierarchy: a graph parser turns edge scores into clusters, each level pooling the graph into its
quotient graph.

One parsing level (the authors' ``ParsingNet``):

1. edge scores s_ij = sigmoid(MLP(h_i ⊙ h_j)), symmetric in i and j; with ``self_loops`` (the
   authors' default) every node also scores its self-loop s_ii;
2. every node keeps its dominant edge, the highest-scoring incident edge (ties: the lowest sender
   index), i -> dom(i);
3. clusters are the weakly connected components of the functional graph i -> dom(i) (min-label
   propagation with pointer jumping in a ``lax.while_loop``; the authors grow them on the CPU);
   without self-loops every cluster of a graph without isolated nodes has at least 2 nodes;
4. the pooled graph is the quotient graph (edges between different clusters, duplicates removed),
   and a cluster's feature is h_C = post(Σ_{i∈C} pre(h_i)) · s_C with s_C the mean score of the
   edges inside C (its self-loop score for a singleton).

Static shapes: the pooled graph keeps the input's node and edge arrays (clusters 0..K−1 first, the
rest masked; intra-cluster and duplicate edges masked with weight 0); the number of levels is the
fixed ``levels`` (the authors repeat while the graph shrinks). Deliberately omitted: DropEdge on
the parser, the link-count factor and node-task unpooling. The graph model sums a mean readout
per level (as the authors do for OGB graphs) into an MLP head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.graph import gcn
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import MODELS


def dominant_edges(graph, edge_score, self_score=None):
    """dom [N]: each node's highest-scoring incoming real edge's sender (its own index when its
    self-loop scores at least as high, or when it has no edge)."""
    n = graph.num_nodes
    s = jnp.where(graph.edge_mask, edge_score, -jnp.inf)
    best = jax.ops.segment_max(s, graph.receivers, num_segments=n)
    if self_score is not None:
        best = jnp.maximum(best, self_score)
    hit = graph.edge_mask & (s >= best[graph.receivers])
    first = jax.ops.segment_min(jnp.where(hit, graph.senders, n), graph.receivers, num_segments=n)
    own = jnp.arange(n)
    if self_score is not None:
        first = jnp.where(self_score >= best, own, first)
    return jnp.where(first < n, first, own)


def components(dom, node_mask):
    """Weakly connected components of i -> dom(i): label [N] = smallest node index of the
    component (padding nodes keep their own index)."""
    n = dom.shape[0]
    dom = jnp.where(node_mask, dom, jnp.arange(n))

    def step(lab):
        lab = jnp.minimum(lab, lab[dom])
        lab = lab.at[dom].min(lab)
        return lab[lab]

    def cond(c):
        return c[1]

    def body(c):
        new = step(c[0])
        return new, jnp.any(new != c[0])

    lab, _ = jax.lax.while_loop(cond, body, (jnp.arange(n), jnp.array(True)))
    return lab


def parse(graph, edge_score, self_score=None):
    """(cluster [N] in 0..K−1 for real nodes (N−1... for padding), number of clusters K, pooled
    quotient :class:`Graph` with nodes unset)."""
    n = graph.num_nodes
    lab = components(dominant_edges(graph, edge_score, self_score), graph.node_mask)
    root = (lab == jnp.arange(n)) & graph.node_mask
    rank = jnp.cumsum(root) - 1
    k = jnp.sum(root)
    # real nodes: their root's rank; padding nodes: k + their order among padding nodes (< N)
    pad_rank = k + jnp.cumsum(~graph.node_mask) - 1
    cluster = jnp.where(graph.node_mask, rank[lab], pad_rank)
    cs, cr = cluster[graph.senders], cluster[graph.receivers]
    inter = graph.edge_mask & (cs != cr)
    key = jnp.where(inter, cr * n + cs, n * n)
    order = jnp.argsort(key, stable=True)
    sk = key[order]
    first = jnp.concatenate([jnp.ones(1, bool), sk[1:] != sk[:-1]])
    keep = jnp.zeros_like(inter).at[order].set(first) & inter
    node_graph = jnp.zeros(n, graph.node_graph.dtype).at[cluster].set(graph.node_graph)
    node_mask = jnp.arange(n) < k
    pooled = graph.replace(
        senders=cs,
        receivers=cr,
        edge_mask=keep,
        edge_weight=jnp.where(keep, graph.edge_weight, 0).astype(graph.edge_weight.dtype),
        node_mask=node_mask,
        node_graph=jnp.where(node_mask, node_graph, graph.node_graph[n - 1]),
        norm=None,
        edges=None,
        sorted_receivers=False,
    )
    return cluster, k, pooled


def cluster_scores(graph, cluster, edge_score, self_score=None):
    """s_C [N]: mean score of the real edges inside each cluster; the self-loop score (or 1
    without self-loops) for clusters without inner edges."""
    n = graph.num_nodes
    inner = graph.edge_mask & (cluster[graph.senders] == cluster[graph.receivers])
    c = cluster[graph.receivers]
    tot = jax.ops.segment_sum(jnp.where(inner, edge_score, 0.0), c, n)
    cnt = jax.ops.segment_sum(inner.astype(edge_score.dtype), c, n)
    solo = jnp.ones(n, edge_score.dtype)
    if self_score is not None:
        solo = jnp.zeros(n, edge_score.dtype).at[cluster].max(self_score)
    return jnp.where(cnt > 0, tot / jnp.maximum(cnt, 1.0), solo)


class Parser(nn.Module):
    """Edge scorer sigmoid(MLP(h_i ⊙ h_j)) + one parsing level; returns (pooled graph, pooled
    features, cluster [N], K)."""

    hidden: int
    self_loops: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, h):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        scorer = L.MLP((self.hidden, 1), name="scorer", **kw)
        score = lambda a, b: jax.nn.sigmoid(scorer(a * b)[..., 0])  # noqa: E731
        es = score(G.gather(graph, h), G.gather(graph, h, "receivers"))
        ss = score(h, h) if self.self_loops else None
        cluster, k, pooled = parse(graph, es, ss)
        pre = nn.relu(L.dense(self.hidden, True, "pre", **kw)(h))
        summed = jax.ops.segment_sum(
            pre * graph.node_mask[:, None].astype(pre.dtype), cluster, graph.num_nodes
        )
        post = L.dense(self.hidden, True, "post", **kw)(summed)
        sc = cluster_scores(graph, cluster, es, ss).astype(post.dtype)
        x = post * sc[:, None] * pooled.node_mask[:, None].astype(post.dtype)
        return pooled, x, cluster, k


@MODELS.register("gpn")
class GPN(nn.Module):
    """Graph classifier: GCN encoder → ``levels`` × [GCN → parse and pool] with a mean readout per
    level summed → dropout → MLP head."""

    TASK = "graph"
    hidden: int = 64
    num_classes: int = 2
    levels: int = 2
    self_loops: bool = True
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.relu(gcn.GCNConv(self.hidden, name="encoder", **kw)(graph, x))
        readout = G.pool(graph, h, "mean")
        for i in range(self.levels):
            h = nn.relu(gcn.GCNConv(self.hidden, name=f"conv{i}", **kw)(graph, h))
            graph, h, _, _ = Parser(self.hidden, self.self_loops, name=f"parser{i}", **kw)(graph, h)
            readout = readout + G.pool(graph, h, "mean")
        readout = L.Dropout(self.dropout)(readout, deterministic=not train)
        return L.MLP((self.hidden, self.num_classes), name="head", **kw)(readout)


__all__ = ["GPN", "Parser", "cluster_scores", "components", "dominant_edges", "parse"]

"""LFGCN: Chen, Gel & Avrachenkov (ICDM 2020), graph convolution with Lévy-flight (fractional)
random walks and a betweenness-based DropEdge ("P-DropEdge").

Lévy-flight walk (Riascos & Mateos' fractional random walk, the operator LFGCN propagates with):
with the combinatorial Laplacian L = D − A = U Λ Uᵀ and 0 < γ ≤ 1, L^γ = U Λ^γ Uᵀ and

    P^(γ) = I − diag(L^γ)^-1 L^γ,

a dense, row-stochastic transition matrix with zero diagonal whose entries decay as a power law
with distance (long jumps), while γ = 1 gives the simple random walk D^-1 A. It is computed once on
the host (a dense eigendecomposition, O(n³): Planetoid-sized graphs; above ``MAX_WALK_NODES`` nodes
it is a one-line error).

P-DropEdge: edges bridging communities have high edge betweenness (Brandes' algorithm through
networkx, host, once); every training step drops round(rate · m) undirected edges, sampled
without replacement with probability ∝ betweenness^(1/τ) (Gumbel top-k on log betweenness /
τ), so τ → 0 drops the highest-betweenness edges first and τ = 1 draws proportionally.

Layer (netlab's arrangement; the paper's exact layer was not read): h' = P^(γ) h W_walk +
GCNConv(h) on the edge-dropped graph, i.e. the long-range walk plus the local walk; DropEdge acts
on the local branch only (P^(γ) is fixed, recomputing it per step would cost O(n³)).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from netlab.errors import UserError
from netlab.graph import edge_sets, gcn
from netlab.graph import layers as L
from netlab.graph.registries import MODELS

MAX_WALK_NODES = 12000


def fractional_walk(senders, receivers, num_nodes: int, gamma: float) -> np.ndarray:
    """P^(γ) = I − diag(L^γ)^-1 L^γ [n, n] (float64) of the undirected graph; an isolated node
    stays put (P_ii = 1)."""
    n = int(num_nodes)
    a = np.zeros((n, n))
    a[np.asarray(receivers), np.asarray(senders)] = 1.0
    a = np.maximum(a, a.T)
    lam, u = np.linalg.eigh(np.diag(a.sum(1)) - a)
    # the zero eigenvalues (one per component) must stay 0: (1e-16)^γ is not small for γ < 1
    lam = np.where(lam > 1e-9 * max(lam.max(), 1.0), lam, 0.0)
    lg = (u * lam**gamma) @ u.T
    d = np.diag(lg).copy()
    alone = d <= 1e-12
    p = -lg / np.where(alone, 1.0, d)[:, None]
    p[np.arange(n), np.arange(n)] = 0.0
    p[alone] = 0.0
    p[alone, np.flatnonzero(alone)] = 1.0
    return p


def edge_pairs(senders, receivers, num_nodes: int):
    """(pair [E] int32: the undirected pair of each directed edge, betweenness [P] float64 of the
    P pairs) with networkx's edge betweenness (Brandes, normalised)."""
    s, r = np.asarray(senders), np.asarray(receivers)
    lo, hi = np.minimum(s, r), np.maximum(s, r)
    uniq, pair = np.unique(np.stack([lo, hi], 1), axis=0, return_inverse=True)
    g = nx.Graph()
    g.add_nodes_from(range(int(num_nodes)))
    g.add_edges_from(map(tuple, uniq.tolist()))
    eb = nx.edge_betweenness_centrality(g)
    btw = np.array([eb[(int(u), int(v))] if (u, v) in eb else eb[(v, u)] for u, v in uniq])
    return pair.reshape(-1).astype(np.int32), btw


def drop_pairs(key, log_b, pair_mask, rate: float, tau: float):
    """Drop mask [P] over pairs: exactly round(rate · #real pairs) real pairs, the largest keys
    log_b / τ + Gumbel (τ = 0: the largest log_b, ties by index)."""
    num = jnp.sum(pair_mask)
    k = jnp.floor(rate * num + 0.5)
    keys = log_b / tau + jax.random.gumbel(key, log_b.shape, log_b.dtype) if tau > 0 else log_b
    keys = jnp.where(pair_mask, keys, -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-keys, stable=True), stable=True)
    return (rank < k) & pair_mask


@MODELS.register("lfgcn")
class LFGCN(nn.Module):
    """Node classifier: ``num_layers`` × [dropout → P^(γ) h W_walk + GCNConv(h; P-DropEdge)], ReLU
    between layers; ``gamma`` = γ, ``drop_rate``, ``drop_temperature`` = τ."""

    TASK = "node"
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 2
    gamma: float = 0.5
    drop_rate: float = 0.1
    drop_temperature: float = 1.0
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.drop_rate < 1.0:
            raise UserError(
                f"model.gamma={self.gamma}, model.drop_rate={self.drop_rate}: use 0 < gamma <= 1 "
                "and 0 <= drop_rate < 1"
            )
        if self.drop_temperature < 0:
            raise UserError(f"model.drop_temperature={self.drop_temperature}: use a value >= 0")
        super().__post_init__()

    def prepare_graph(self, graph):
        """The numpy graph with ``lfgcn_walk`` [N, N] (P^(γ) on real nodes, zero elsewhere),
        ``lfgcn_pair`` [E], ``lfgcn_logb`` [E] and ``lfgcn_pair_mask`` [E] in ``graph.norm``."""
        s, r, n, big, dtype = edge_sets.real_edges(graph)
        if n > MAX_WALK_NODES:
            raise UserError(
                f"LFGCN's dense Lévy-flight walk needs an n×n matrix and n³ work; this graph has "
                f"{n} nodes (at most {MAX_WALK_NODES}): use a smaller graph or another model.name"
            )
        walk = np.zeros((big, big), dtype)
        walk[:n, :n] = fractional_walk(s, r, n, self.gamma)
        pair, btw = edge_pairs(s, r, n)
        e = graph.num_edges
        em = np.asarray(graph.edge_mask)
        full_pair = np.full(e, min(len(btw), e - 1), np.int32)
        full_pair[em] = pair
        logb = np.zeros(e, dtype)
        logb[: len(btw)] = np.log(np.maximum(btw, 1e-30))
        norm = dict(graph.norm or {})
        norm.update(
            lfgcn_walk=walk,
            lfgcn_pair=full_pair,
            lfgcn_logb=logb,
            lfgcn_pair_mask=np.arange(e) < len(btw),
        )
        return graph.replace(norm=norm)

    def drop_edges(self, graph, key):
        """``graph`` without the P-DropEdge pairs drawn with ``key`` (GCN coefficients recomputed
        on device)."""
        nm = graph.norm
        drop = drop_pairs(
            key, nm["lfgcn_logb"], nm["lfgcn_pair_mask"], self.drop_rate, self.drop_temperature
        )
        keep = graph.edge_mask & ~drop[nm["lfgcn_pair"]]
        return graph.replace(
            edge_mask=keep,
            edge_weight=jnp.where(keep, graph.edge_weight, 0).astype(graph.edge_weight.dtype),
            norm=None,
        )

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        if graph.norm is None or "lfgcn_walk" not in graph.norm:
            raise UserError(
                "LFGCN needs its walk and betweenness precomputed on the host: build the graph "
                "with LFGCN.prepare_graph(graph) (the node task does this)"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        walk = graph.norm["lfgcn_walk"]
        local = graph
        if train and self.drop_rate > 0:
            local = self.drop_edges(graph, self.make_rng("dropout"))
        h = x
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            width = self.num_classes if last else self.hidden
            h = L.Dropout(self.dropout)(h, deterministic=not train)
            far = walk.astype(h.dtype) @ L.dense(width, False, f"walk{i}", **kw)(h)
            h = far + gcn.GCNConv(width, name=f"local{i}", **kw)(local, h)
            if not last:
                h = nn.relu(h)
        return h


__all__ = ["LFGCN", "drop_pairs", "edge_pairs", "fractional_walk"]

"""LightGCN: He, Deng, Wang, Li, Zhang & Wang, "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation" (SIGIR 2020).

On the bipartite user-item graph with adjacency A = [[0, R], [R^T, 0]] and Â = D^{-1/2} A D^{-1/2}
(no self-loops), eq. (3)/(7)-(8):
    E^{(k+1)} = Â E^{(k)},    E = sum_{k=0..L} alpha_k E^{(k)},  alpha_k = 1/(L+1),
and the score is the inner product ŷ_ui = e_u^T e_i (eq. 5). Only E^{(0)} is learned. Training
uses the BPR loss (eq. 15; Rendle et al., UAI 2009)
    L = -mean_{(u,i,j)} ln σ(ŷ_ui - ŷ_uj) + λ ||E^{(0)}_batch||^2 / (2 B).

The model is a pure linen module; the graph comes in as an argument (host-built by
`bipartite_graph`, propagated through netlab.graph.graphs). `LGConv` is one propagation as a layer
(`registries.LAYERS["lightgcn"]`). Ranking metrics: `recsys.py`; the task: `recsys_task.py`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph import padding
from netlab.graph.registries import LAYERS, MODELS
from netlab.sharding import axes


def bipartite_graph(users, items, num_users: int, num_items: int, dtype=np.float32) -> G.Graph:
    """The user-item graph A = [[0, R], [R^T, 0]] (users 0..U-1, items U..U+I-1) as a padded host
    netlab Graph with both edge directions, duplicates merged, and the coefficients
    Â_vw = 1/sqrt(d_v d_w) precomputed in `dtype` (`norm["gcn_noloop_edge"]`, PyG gcn_norm
    without self-loops)."""
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64) + num_users
    g = padding.from_edges(
        users, items, num_users + num_items, symmetrize=True, norms=False, dtype=dtype
    )
    return padding.with_norms(g, self_loops=False, no_self_loops=True)


@LAYERS.register("lightgcn")
class LGConv(nn.Module):
    """One LightGCN propagation, eq. 3: Â x with Â = D^{-1/2} A D^{-1/2} (no self-loops, no
    weights; PyG ``LGConv``). x is first mapped to `features` by a bias-free linear map when the
    widths differ."""

    features: int | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: G.Graph, x):
        x = L.project(self, x, self.features)
        return G.normalized_adjacency_matmul(graph, x, add_self_loops=False)


@MODELS.register("lightgcn")
class LightGCN(nn.Module):
    """LightGCN (eqs. 3, 7-8). `__call__(graph)` with `graph = bipartite_graph(...)` -> dict with
    the final user/item embeddings (`users`, `items`) and the layer-0 ones (`users0`, `items0`,
    for the L2 term). Propagation is `graphs.normalized_adjacency_matmul` without self-loops."""

    TASK = "recsys"
    num_users: int
    num_items: int
    dim: int = 64
    num_layers: int = 3
    init_std: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: G.Graph):
        init = axes.param(nn.initializers.normal(self.init_std), None, axes.EMBED)
        users0 = self.param("user_embedding", init, (self.num_users, self.dim), self.param_dtype)
        items0 = self.param("item_embedding", init, (self.num_items, self.dim), self.param_dtype)
        n = self.num_users + self.num_items
        pad = jnp.zeros((graph.num_nodes - n, self.dim), users0.dtype)
        e = jnp.concatenate([users0, items0, pad], 0)
        if self.dtype is not None:
            e = e.astype(self.dtype)
        total = e
        for _ in range(self.num_layers):
            e = G.normalized_adjacency_matmul(graph, e, add_self_loops=False)
            total = total + e
        final = total / (self.num_layers + 1)
        return {
            "users": final[: self.num_users],
            "items": final[self.num_users : n],
            "users0": users0,
            "items0": items0,
        }


def bpr_loss(user_emb, pos_emb, neg_emb, reg: float = 0.0, user0=None, pos0=None, neg0=None):
    """BPR (eq. 15): mean softplus(-(ŷ_ui - ŷ_uj)) + reg * (|e_u0|² + |e_i0|² + |e_j0|²)/(2B).
    Returns (loss, bpr_term)."""
    diff = jnp.sum(user_emb * pos_emb, -1) - jnp.sum(user_emb * neg_emb, -1)
    bpr = jnp.mean(jax.nn.softplus(-diff))
    loss = bpr
    if reg and user0 is not None:
        l2 = (jnp.sum(user0**2) + jnp.sum(pos0**2) + jnp.sum(neg0**2)) / (2.0 * user0.shape[0])
        loss = loss + reg * l2
    return loss, bpr

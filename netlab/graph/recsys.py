"""Graph collaborative filtering: LightGCN and UltraGCN, the BPR loss, Recall@K and NDCG@K.

LightGCN — He, Deng, Wang, Li, Zhang & Wang, "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation", SIGIR 2020. On the bipartite user-item graph with adjacency
A = [[0, R], [R^T, 0]] and  Â = D^{-1/2} A D^{-1/2}  (no self-loops), eq. (3)/(7)-(8):
    E^{(k+1)} = Â E^{(k)},    E = sum_{k=0..L} alpha_k E^{(k)},  alpha_k = 1/(L+1),
and the score is the inner product  ŷ_ui = e_u^T e_i  (eq. 5). Only E^{(0)} is learned. Training
uses the BPR loss (eq. 15; Rendle et al., UAI 2009)
    L = -mean_{(u,i,j)} ln σ(ŷ_ui - ŷ_uj) + λ ||E^{(0)}_batch||^2 / (2 B).

UltraGCN — Mao, Zhu, Xiao, Zhang, Zhang & Li, "UltraGCN: Ultra Simplification of Graph
Convolutional Networks for Recommendation", CIKM 2021. No message passing: the limit of infinitely
many graph convolutions is enforced as a weighted constraint on plain embeddings. With training
degrees d_u, d_i (eq. 9):
    β_{u,i} = (1/d_u) sqrt((d_u + 1)/(d_i + 1)),
the user-item constraint loss (eq. 11) L_C = -Σ_{(u,i)∈N+} β_ui ln σ(e_u·e_i) - Σ_{(u,j)∈N-} β_uj ln σ(-e_u·e_j),
the main loss L_O (eq. 12, BCE with negative sampling) and the item-item constraint on the
co-occurrence graph G = R^T R (eqs. 13-15), top-K neighbours S(i) by
    ω_{i,j} = G_ij / (g_i - G_ii) · sqrt(g_i / g_j),   g_i = Σ_k G_ik,
    L_I = -Σ_{(u,i)∈N+} Σ_{j∈S(i)} ω_ij ln σ(e_u·e_j).
Total (eq. 16): L = L_O + λ L_C + γ L_I (+ an L2 term on the batch embeddings).

Metrics (LightGCN protocol): full ranking over all items with the user's training items masked,
Recall@K = |top-K ∩ test| / |test|, NDCG@K = DCG@K / IDCG@K with binary relevance and
IDCG over min(|test|, K) hits; averaged over users with at least one test item.

Models are pure linen modules; the graph comes in as an argument (host-built by `bipartite_graph`,
propagated through netlab.graph.graphs), UltraGCN's coefficients by `ultragcn_constraints`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import graphs as G
from netlab.sharding import axes


# --------------------------------------------------------------------------------------------------
# Host-side graph preparation
def bipartite_graph(users, items, num_users: int, num_items: int) -> G.Graph:
    """The user-item graph A = [[0, R], [R^T, 0]] (users 0..U-1, items U..U+I-1) as a padded host
    netlab Graph with both edge directions, duplicates merged, and the LightGCN coefficients
    Â_vw = 1/sqrt(d_v d_w) precomputed (`norm["gcn_noloop_edge"]`, PyG gcn_norm without self-loops)."""
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64) + num_users
    g = G.from_edges(users, items, num_users + num_items, symmetrize=True, norms=False)
    return G.with_norms(g, self_loops=False, no_self_loops=True)


def ultragcn_constraints(users, items, num_users: int, num_items: int, num_neighbors: int = 10):
    """UltraGCN's constraint coefficients (eqs. 9 and 14).

    Returns dict(beta_user[U], beta_item[I]) with β_{u,i} = beta_user[u] * beta_item[i] =
    sqrt(d_u+1)/d_u * 1/sqrt(d_i+1), and `ii_neighbors[I, K]`, `ii_weights[I, K]`: each item's
    top-K co-occurring items j != i by ω_{i,j} (weight 0 where an item has fewer than K)."""
    import scipy.sparse as sp
    users, items = np.asarray(users), np.asarray(items)
    du = np.bincount(users, minlength=num_users).astype(np.float64)
    di = np.bincount(items, minlength=num_items).astype(np.float64)
    beta_user = np.where(du > 0, np.sqrt(du + 1.0) / np.maximum(du, 1.0), 0.0)
    beta_item = 1.0 / np.sqrt(di + 1.0)
    R = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(num_users, num_items))
    R.data[:] = 1.0
    G = (R.T @ R).tocsr()
    g = np.asarray(G.sum(1)).ravel()
    diag = G.diagonal()
    K = int(num_neighbors)
    nbr = np.zeros((num_items, K), np.int32)
    wts = np.zeros((num_items, K), np.float32)
    for i in range(num_items):
        cols = G.indices[G.indptr[i]:G.indptr[i + 1]]
        vals = G.data[G.indptr[i]:G.indptr[i + 1]]
        keep = cols != i
        cols, vals = cols[keep], vals[keep]
        if len(cols) == 0 or g[i] - diag[i] <= 0:
            continue
        omega = vals / (g[i] - diag[i]) * np.sqrt(g[i] / g[cols])
        top = np.argsort(-omega, kind="stable")[:K]
        nbr[i, :len(top)] = cols[top]
        wts[i, :len(top)] = omega[top]
    return {"beta_user": beta_user.astype(np.float32), "beta_item": beta_item.astype(np.float32),
            "ii_neighbors": nbr, "ii_weights": wts}


# --------------------------------------------------------------------------------------------------
# Models
class LightGCN(nn.Module):
    """LightGCN (eqs. 3, 7-8). `__call__(graph)` with `graph = bipartite_graph(...)` -> dict with the
    final user/item embeddings (`users`, `items`) and the layer-0 ones (`users0`, `items0`, for the L2
    term). Propagation is netlab.graph.graphs.normalized_adjacency_matmul without self-loops."""
    num_users: int
    num_items: int
    dim: int = 64
    num_layers: int = 3
    init_std: float = 0.1

    @nn.compact
    def __call__(self, graph: G.Graph):
        init = axes.param(nn.initializers.normal(self.init_std), None, axes.EMBED)
        users0 = self.param("user_embedding", init, (self.num_users, self.dim))
        items0 = self.param("item_embedding", init, (self.num_items, self.dim))
        n = self.num_users + self.num_items
        e = jnp.concatenate([users0, items0, jnp.zeros((graph.num_nodes - n, self.dim), users0.dtype)], 0)
        total = e
        for _ in range(self.num_layers):
            e = G.normalized_adjacency_matmul(graph, e, add_self_loops=False)
            total = total + e
        final = total / (self.num_layers + 1)
        return {"users": final[:self.num_users], "items": final[self.num_users:n],
                "users0": users0, "items0": items0}


class UltraGCN(nn.Module):
    """UltraGCN's learned embeddings (the model is the loss, see `ultragcn_loss`).
    `__call__()` -> dict(users, items, users0, items0) for a common interface with LightGCN."""
    num_users: int
    num_items: int
    dim: int = 64
    init_std: float = 1e-4

    @nn.compact
    def __call__(self, *unused):
        init = axes.param(nn.initializers.normal(self.init_std), None, axes.EMBED)
        users = self.param("user_embedding", init, (self.num_users, self.dim))
        items = self.param("item_embedding", init, (self.num_items, self.dim))
        return {"users": users, "items": items, "users0": users, "items0": items}


# --------------------------------------------------------------------------------------------------
# Losses
def bpr_loss(user_emb, pos_emb, neg_emb, reg: float = 0.0, user0=None, pos0=None, neg0=None):
    """BPR (LightGCN eq. 15): mean softplus(-(ŷ_ui - ŷ_uj)) + reg * (|e_u0|² + |e_i0|² + |e_j0|²)/(2B).
    Returns (loss, bpr_term)."""
    diff = jnp.sum(user_emb * pos_emb, -1) - jnp.sum(user_emb * neg_emb, -1)
    bpr = jnp.mean(jax.nn.softplus(-diff))
    loss = bpr
    if reg and user0 is not None:
        l2 = (jnp.sum(user0 ** 2) + jnp.sum(pos0 ** 2) + jnp.sum(neg0 ** 2)) / (2.0 * user0.shape[0])
        loss = loss + reg * l2
    return loss, bpr


def ultragcn_loss(user_emb, item_emb, users, pos, negs, beta_user, beta_item, ii_neighbors=None,
                  ii_weights=None, *, lam: float = 1.0, gamma: float = 0.0, neg_weight: float = 1.0,
                  reg: float = 0.0):
    """UltraGCN objective (eq. 16) on a batch: users[B], pos[B], negs[B, M].

    L_O: BCE, -ln σ(e_u·e_i) - neg_weight * mean_j ln σ(-e_u·e_j);
    L_C: the same terms weighted by β (eq. 11); L_I (eq. 15) with `ii_*` (skipped when None).
    Returns (loss, parts dict). Means over the batch rather than sums (a constant rescaling)."""
    eu = user_emb[users]
    s_pos = jnp.sum(eu * item_emb[pos], -1)
    s_neg = jnp.einsum("bd,bmd->bm", eu, item_emb[negs])
    b_pos = beta_user[users] * beta_item[pos]
    b_neg = beta_user[users][:, None] * beta_item[negs]
    lp, ln = -jax.nn.log_sigmoid(s_pos), -jax.nn.log_sigmoid(-s_neg)
    l_o = jnp.mean(lp + neg_weight * ln.mean(-1))
    l_c = jnp.mean(b_pos * lp + neg_weight * (b_neg * ln).mean(-1))
    loss = l_o + lam * l_c
    parts = {"loss_o": l_o, "loss_c": l_c}
    if ii_neighbors is not None and gamma:
        nb = ii_neighbors[pos]                                  # [B, K]
        s_nb = jnp.einsum("bd,bkd->bk", eu, item_emb[nb])
        l_i = jnp.mean(jnp.sum(-ii_weights[pos] * jax.nn.log_sigmoid(s_nb), -1))
        loss = loss + gamma * l_i
        parts["loss_i"] = l_i
    if reg:
        l2 = (jnp.sum(eu ** 2) + jnp.sum(item_emb[pos] ** 2) + jnp.sum(item_emb[negs] ** 2)) / (2.0 * users.shape[0])
        loss = loss + reg * l2
    return loss, parts


# --------------------------------------------------------------------------------------------------
# Metrics
def recall_ndcg_at_k(scores, train_mask, test_mask, k: int = 20):
    """Per-user Recall@k and NDCG@k with training items masked.

    scores, train_mask, test_mask: [B, I] (masks bool). Returns (recall[B], ndcg[B], has_test[B]);
    rows without test items give 0 and has_test False."""
    scores = jnp.where(train_mask, -jnp.inf, scores)
    _, top = jax.lax.top_k(scores, k)
    hits = jnp.take_along_axis(test_mask, top, axis=1).astype(jnp.float32)          # [B, k]
    n_test = test_mask.sum(1)
    discount = 1.0 / jnp.log2(jnp.arange(k, dtype=jnp.float32) + 2.0)
    dcg = (hits * discount).sum(1)
    idcg = jnp.cumsum(discount)[jnp.clip(jnp.minimum(n_test, k) - 1, 0, k - 1)]
    has = n_test > 0
    recall = jnp.where(has, hits.sum(1) / jnp.maximum(n_test, 1), 0.0)
    ndcg = jnp.where(has, dcg / idcg, 0.0)
    return recall, ndcg, has

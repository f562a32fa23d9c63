"""UltraGCN: Mao, Zhu, Xiao, Zhang, Zhang & Li, "UltraGCN: Ultra Simplification of Graph
Convolutional Networks for Recommendation" (CIKM 2021).

No message passing: the limit of infinitely many graph convolutions is enforced as a weighted
constraint on plain embeddings. With training degrees d_u, d_i (eq. 9):
    β_{u,i} = (1/d_u) sqrt((d_u + 1)/(d_i + 1)),
the user-item constraint loss (eq. 11)
    L_C = -Σ_{(u,i)∈N+} β_ui ln σ(e_u·e_i) - Σ_{(u,j)∈N-} β_uj ln σ(-e_u·e_j),
the main loss L_O (eq. 12, BCE with negative sampling) and the item-item constraint on the
co-occurrence graph G = R^T R (eqs. 13-15), top-K neighbours S(i) by
    ω_{i,j} = G_ij / (g_i - G_ii) · sqrt(g_i / g_j),   g_i = Σ_k G_ik,
    L_I = -Σ_{(u,i)∈N+} Σ_{j∈S(i)} ω_ij ln σ(e_u·e_j).
Total (eq. 16): L = L_O + λ L_C + γ L_I (+ an L2 term on the batch embeddings). The coefficients
come from `ultragcn_constraints` (host numpy); the task is `recsys_task.py`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph.registries import MODELS
from netlab.sharding import axes


def ultragcn_constraints(
    users, items, num_users: int, num_items: int, num_neighbors: int = 10, dtype=np.float32
):
    """UltraGCN's constraint coefficients (eqs. 9 and 14), in `dtype`.

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
    wts = np.zeros((num_items, K), dtype)
    for i in range(num_items):
        cols = G.indices[G.indptr[i] : G.indptr[i + 1]]
        vals = G.data[G.indptr[i] : G.indptr[i + 1]]
        keep = cols != i
        cols, vals = cols[keep], vals[keep]
        if len(cols) == 0 or g[i] - diag[i] <= 0:
            continue
        omega = vals / (g[i] - diag[i]) * np.sqrt(g[i] / g[cols])
        top = np.argsort(-omega, kind="stable")[:K]
        nbr[i, : len(top)] = cols[top]
        wts[i, : len(top)] = omega[top]
    return {
        "beta_user": beta_user.astype(dtype),
        "beta_item": beta_item.astype(dtype),
        "ii_neighbors": nbr,
        "ii_weights": wts,
    }


@MODELS.register("ultragcn")
class UltraGCN(nn.Module):
    """UltraGCN's learned embeddings (the model is the loss, see `ultragcn_loss`).
    `__call__()` -> dict(users, items, users0, items0) for a common interface with LightGCN."""

    TASK = "recsys"
    num_users: int
    num_items: int
    dim: int = 64
    init_std: float = 1e-4
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, *unused):
        init = axes.param(nn.initializers.normal(self.init_std), None, axes.EMBED)
        users = self.param("user_embedding", init, (self.num_users, self.dim), self.param_dtype)
        items = self.param("item_embedding", init, (self.num_items, self.dim), self.param_dtype)
        return {"users": users, "items": items, "users0": users, "items0": items}


def ultragcn_loss(
    user_emb,
    item_emb,
    users,
    pos,
    negs,
    beta_user,
    beta_item,
    ii_neighbors=None,
    ii_weights=None,
    *,
    lam: float = 1.0,
    gamma: float = 0.0,
    neg_weight: float = 1.0,
    reg: float = 0.0,
):
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
        nb = ii_neighbors[pos]  # [B, K]
        s_nb = jnp.einsum("bd,bkd->bk", eu, item_emb[nb])
        l_i = jnp.mean(jnp.sum(-ii_weights[pos] * jax.nn.log_sigmoid(s_nb), -1))
        loss = loss + gamma * l_i
        parts["loss_i"] = l_i
    if reg:
        l2 = (jnp.sum(eu**2) + jnp.sum(item_emb[pos] ** 2) + jnp.sum(item_emb[negs] ** 2)) / (
            2.0 * users.shape[0]
        )
        loss = loss + reg * l2
    return loss, parts

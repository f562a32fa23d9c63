"""Ranking metrics of graph collaborative filtering (the LightGCN protocol), shared by LightGCN
(`lightgcn.py`) and UltraGCN (`ultragcn.py`).

Full ranking over all items with the user's training items masked, Recall@K = |top-K ∩ test| /
|test|, NDCG@K = DCG@K / IDCG@K with binary relevance and IDCG over min(|test|, K) hits; averaged
over users with at least one test item.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from netlab.graph.graphs import accum_dtype


def recall_ndcg_at_k(scores, train_mask, test_mask, k: int = 20):
    """Per-user Recall@k and NDCG@k with training items masked.

    scores, train_mask, test_mask: [B, I] (masks bool). Returns (recall[B], ndcg[B], has_test[B]);
    rows without test items give 0 and has_test False."""
    dtype = accum_dtype(scores.dtype)
    scores = jnp.where(train_mask, -jnp.inf, scores)
    _, top = jax.lax.top_k(scores, k)
    hits = jnp.take_along_axis(test_mask, top, axis=1).astype(dtype)  # [B, k]
    n_test = test_mask.sum(1)
    discount = 1.0 / jnp.log2(jnp.arange(k, dtype=dtype) + 2.0)
    dcg = (hits * discount).sum(1)
    idcg = jnp.cumsum(discount)[jnp.clip(jnp.minimum(n_test, k) - 1, 0, k - 1)]
    has = n_test > 0
    recall = jnp.where(has, hits.sum(1) / jnp.maximum(n_test, 1), 0.0)
    ndcg = jnp.where(has, dcg / idcg, 0.0)
    return recall, ndcg, has

"""Link-prediction protocol: a deterministic held-out edge split and the ranking metrics of OGB.

- :func:`link_split`: the undirected edges of a graph (each once, u < v) shuffled with ``seed``
  and split train / val / test (default 85 / 5 / 10, GAE's split; NCN's Planetoid protocol uses
  70 / 10 / 20); val and test get as many negative pairs, drawn uniformly from the node pairs that
  are not edges of the full graph (u < v, no self-pairs, no duplicates, val and test disjoint).
  Only the training edges may enter the message-passing graph.
- :func:`hits_at_k`: OGB's Hits@K, the fraction of positive scores **strictly above** the K-th
  highest negative score (1.0 when there are fewer than K negatives); Planetoid papers report
  Hits@20/50/100 against a shared negative set.
- :func:`mrr`: mean reciprocal rank of each positive among its negatives (own row [P, M] or one
  shared set [M]); ties count half (the rank is the mean of the optimistic rank 1 + #(neg > pos)
  and the pessimistic rank 1 + #(neg >= pos), as newer OGB evaluators do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netlab.registry import check_range


@dataclass(frozen=True)
class LinkSplit:
    """Pairs [M, 2] (int32, u < v): positives per split and negatives for val / test."""

    num_nodes: int
    train_pos: np.ndarray
    val_pos: np.ndarray
    val_neg: np.ndarray
    test_pos: np.ndarray
    test_neg: np.ndarray


def undirected_pairs(senders, receivers) -> np.ndarray:
    """Each undirected edge once as (min, max), self-loops dropped, sorted."""
    s, r = np.asarray(senders, np.int64), np.asarray(receivers, np.int64)
    keep = s != r
    pairs = np.stack([np.minimum(s, r)[keep], np.maximum(s, r)[keep]], 1)
    return np.unique(pairs, axis=0).reshape(-1, 2)


def sample_negatives(num_nodes: int, count: int, exclude: set, rng) -> np.ndarray:
    """``count`` distinct pairs (u < v) not in ``exclude`` (a set of (u, v) tuples, updated)."""
    out = []
    while len(out) < count:
        cand = rng.integers(0, num_nodes, (2 * (count - len(out)) + 16, 2))
        for u, v in np.sort(cand, 1).tolist():
            if u != v and (u, v) not in exclude:
                exclude.add((u, v))
                out.append((u, v))
                if len(out) == count:
                    break
    return np.array(out, np.int32).reshape(-1, 2)


def link_split(
    senders, receivers, num_nodes: int, val_fraction=0.05, test_fraction=0.1, seed: int = 0
) -> LinkSplit:
    """The held-out split described in the module docstring; a function of ``seed``."""
    check_range("val_fraction", val_fraction, 0.0, 1.0)
    check_range("test_fraction", test_fraction, 0.0, 1.0 - val_fraction)
    pairs = undirected_pairs(senders, receivers)
    rng = np.random.default_rng(seed)
    pairs = pairs[rng.permutation(len(pairs))].astype(np.int32)
    n_val, n_test = int(len(pairs) * val_fraction), int(len(pairs) * test_fraction)
    exclude = set(map(tuple, pairs.tolist()))
    val_neg = sample_negatives(num_nodes, n_val, exclude, rng)
    test_neg = sample_negatives(num_nodes, n_test, exclude, rng)
    return LinkSplit(
        num_nodes=int(num_nodes),
        train_pos=pairs[n_val + n_test :],
        val_pos=pairs[:n_val],
        val_neg=val_neg,
        test_pos=pairs[n_val : n_val + n_test],
        test_neg=test_neg,
    )


def hits_at_k(pos, neg, k: int) -> float:
    """Fraction of ``pos`` scores strictly above the k-th highest of the shared ``neg`` scores."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if len(neg) < k:
        return 1.0
    kth = np.sort(neg)[-k]
    return float(np.mean(pos > kth))


def mrr(pos, neg) -> float:
    """Mean reciprocal rank of ``pos`` [P] against ``neg`` [P, M] (own) or [M] (shared)."""
    pos = np.asarray(pos, np.float64)[:, None]
    neg = np.asarray(neg, np.float64)
    neg = np.broadcast_to(neg[None] if neg.ndim == 1 else neg, (pos.shape[0], neg.shape[-1]))
    rank = 1.0 + 0.5 * ((neg > pos).sum(1) + (neg >= pos).sum(1))
    return float(np.mean(1.0 / rank))


__all__ = ["LinkSplit", "hits_at_k", "link_split", "mrr", "sample_negatives", "undirected_pairs"]

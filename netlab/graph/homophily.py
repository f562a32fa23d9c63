"""A-X dependence: Lee et al., "Feature Distribution on Graph Topology Mediates the Effect of
Graph Convolution: Homophily Perspective" (ICML 2024). Class-controlled feature homophily (CFH),
its random graph model CSBM-X and the same-class feature shuffle.

CFH measures how much the graph structure depends on the node features beyond what the labels
explain (host, numpy, O(n² f): Planetoid-sized graphs):

1. class-controlled features: x̃_i = x_i − mean of x over i's class;
2. d_ij = ‖x̃_i − x̃_j‖ for each edge j -> i and d_i = mean over i's neighbours;
3. b_i = mean distance from i to all other nodes, h_i = b_i − d_i (0 for isolated nodes, still
   averaged);
4. h = mean_i h_i, divided by mean_i b_i when h ≥ 0 and by mean_i d_i (over nodes with neighbours)
   otherwise, so CFH ∈ [−1, 1]; 0/0 (constant class-controlled features) gives 0.

CSBM-X: two equal classes with class-controlled features N(0, 1) (class 0) and N(0, σ²)
(class 1); every node draws ``d_pos`` in-class and ``d_neg`` cross-class neighbours without
replacement with probability ∝ exp(τ h_ij), h_ij = b_i − d_ij (τ > 0 raises CFH, τ < 0 lowers it,
τ = 0 is the stochastic block model); finally the classes are shifted to means ∓μ. Edges are
directed (j -> i for each neighbour j that i draws), as in the authors' generator.

Feature shuffle: within each class (and each group, e.g. train/val/test), a random ``fraction`` of
the nodes exchange their feature vectors: labels and class-conditional feature distributions are
kept, the A-X dependence is broken.
"""

from __future__ import annotations

import numpy as np


def _pairwise(x):
    sq = (x * x).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0))


def class_controlled(x, y):
    """x minus the mean of its class (float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y)
    out = x.copy()
    for c in np.unique(y):
        out[y == c] -= x[y == c].mean(0)
    return out


def cfh(x, y, senders, receivers) -> float:
    """Class-controlled feature homophily of the graph with edges senders[k] -> receivers[k]."""
    xc = class_controlled(np.asarray(x).reshape(len(y), -1), y)
    n = len(xc)
    dist = _pairwise(xc)
    s, r = np.asarray(senders), np.asarray(receivers)
    deg = np.bincount(r, minlength=n)
    d_sum = np.bincount(r, weights=dist[r, s], minlength=n)
    has = deg > 0
    d = np.where(has, d_sum / np.maximum(deg, 1), 0.0)
    b = dist.sum(1) / max(n - 1, 1)
    h = np.where(has, b - d, 0.0).mean()
    denom = b.mean() if h >= 0 else d[has].mean()
    return float(h / denom) if denom > 0 else 0.0


def _sample(rng, cand, logits, k):
    """k members of ``cand`` without replacement with probability ∝ exp(logits) (Gumbel top-k)."""
    keys = logits + rng.gumbel(size=len(cand))
    return cand[np.argsort(-keys, kind="stable")[:k]]


def csbm_x(n=1000, d_pos=10, d_neg=10, tau=0.0, sigma=1.0, mu=0.0, feature_dim=1, rng=0):
    """(x [n, f], y [n], senders, receivers) of a CSBM-X graph (see the module docstring)."""
    rng = np.random.default_rng(rng)
    y = (np.arange(n) >= n // 2).astype(np.int64)
    x = rng.normal(size=(n, feature_dim)) * np.where(y == 1, sigma, 1.0)[:, None]
    dist = _pairwise(x)
    b = dist.sum(1) / max(n - 1, 1)
    senders, receivers = [], []
    for i in range(n):
        for same, k in ((True, d_pos), (False, d_neg)):
            cand = np.flatnonzero((y == y[i]) == same)
            cand = cand[cand != i]
            logits = tau * (b[i] - dist[i, cand])
            pick = _sample(rng, cand, logits - logits.max(), min(k, len(cand)))
            senders.append(pick)
            receivers.append(np.full(len(pick), i))
    x = x + np.where(y == 1, mu, -mu)[:, None]
    return x, y, np.concatenate(senders), np.concatenate(receivers)


def shuffle_features(x, y, fraction: float, groups=None, rng=0):
    """x with a random ``fraction`` of each (class, group)'s nodes permuted among themselves."""
    rng = np.random.default_rng(rng)
    x, y = np.asarray(x), np.asarray(y)
    groups = np.zeros(len(y), np.int64) if groups is None else np.asarray(groups)
    out = x.copy()
    for c in np.unique(y):
        for grp in np.unique(groups):
            idx = np.flatnonzero((y == c) & (groups == grp))
            chosen = rng.permutation(idx)[: int(round(fraction * len(idx)))]
            out[chosen] = x[rng.permutation(chosen)]
    return out


__all__ = ["cfh", "class_controlled", "csbm_x", "shuffle_features"]

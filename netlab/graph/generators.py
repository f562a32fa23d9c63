"""Random graph generators: SBM, contextual SBM, and the directed SBM (DSBM) of DIGRAC.

All generators are host-side numpy, take a `numpy.random.Generator` (or an int seed) and return
plain arrays: `senders`, `receivers` (int32, one row per directed edge, sorted by receiver then
sender), `labels` (int32 cluster ids), and for the contextual SBM a feature matrix.

- SBM (Holland, Laskey & Leinhardt 1983): nodes in blocks; each unordered pair {i, j} is joined
  independently with probability `p_in` inside a block and `p_out` across blocks. Undirected graphs
  are returned with both directions of every edge.
- Contextual SBM (Deshpande, Sen, Montanari & Mossel, NeurIPS 2018): an SBM plus Gaussian features
  `x_i = mu_{y_i} + noise`, class means of norm `mu` in random directions.
- DSBM (He, Reinert, Wang & Cucuringu, "DIGRAC: Digraph Clustering Based on Flow Imbalance", LoG
  2022, §5.1, after Cucuringu et al. 2020): a K x K meta-graph F with F[k, l] + F[l, k] = 1 between
  related clusters; each ordered pair (i, j), i in C_k, j in C_l, i != j, becomes an edge i -> j
  independently with probability p * F[k, l]. `eta` is the flow noise: between clusters joined in
  the meta-graph, a fraction `eta` of the edges points against the planted direction.
  `meta_graph` follows the styles described in PyTorch Geometric Signed Directed's
  `meta_graph_generation` (path, cyclic, complete, star, multipartite, with an optional ambient
  cluster); this is an independent re-implementation from that description.
"""

from __future__ import annotations

import math

import numpy as np

from netlab.errors import UserError
from netlab.registry import check_choice

STYLES = ("path", "cyclic", "complete", "star", "multipartite")


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def block_sizes(n: int, k: int, size_ratio: float = 1.0) -> np.ndarray:
    """Cluster sizes: equal (floor((i+1)n/k) - floor(in/k)), or geometric with largest/smallest =
    `size_ratio` (ratio size_ratio**(1/(k-1)) between consecutive clusters, last takes the rest)."""
    if k < 1 or n < k:
        raise UserError(f"need 1 <= k <= n, got n={n}, k={k}")
    if size_ratio == 1.0 or k == 1:
        return np.array([(i + 1) * n // k - i * n // k for i in range(k)], np.int64)
    r = size_ratio ** (1.0 / (k - 1))
    w = r ** np.arange(k)
    sizes = np.floor(n * w / w.sum()).astype(np.int64)
    sizes = np.maximum(sizes, 1)
    sizes[-1] = n - sizes[:-1].sum()
    return sizes


def _sort_edges(senders, receivers):
    order = np.lexsort((senders, receivers))
    return senders[order].astype(np.int32), receivers[order].astype(np.int32)


def _block_bernoulli(labels, prob, rng, directed):
    """Sample edges with P(i -> j) = prob[labels[i], labels[j]] (i != j), dense per row block."""
    n = len(labels)
    senders, receivers = [], []
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        p = prob[labels[rows][:, None], labels[None, :]]
        hit = rng.random(p.shape) < p
        cols = np.arange(n)[None, :]
        hit &= cols != rows[:, None]
        if not directed:
            hit &= cols > rows[:, None]  # each unordered pair drawn once
        r, c = np.nonzero(hit)
        senders.append(rows[r])
        receivers.append(c)
    s = np.concatenate(senders) if senders else np.zeros(0, np.int64)
    r = np.concatenate(receivers) if receivers else np.zeros(0, np.int64)
    if not directed:
        s, r = np.concatenate([s, r]), np.concatenate([r, s])
    return _sort_edges(s, r)


def sbm(sizes, p_in: float, p_out: float, rng=0):
    """Undirected SBM. Returns (senders, receivers, labels); both directions of each edge."""
    rng = _rng(rng)
    sizes = np.asarray(sizes, np.int64)
    labels = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
    prob = np.full((len(sizes), len(sizes)), float(p_out))
    np.fill_diagonal(prob, float(p_in))
    s, r = _block_bernoulli(labels, prob, rng, directed=False)
    return s, r, labels


def contextual_sbm(sizes, p_in: float, p_out: float, feature_dim: int, mu: float = 1.0, rng=0):
    """Contextual SBM: SBM edges plus features x_i = m_{y_i} + N(0, I), ||m_k|| = mu.

    Returns (senders, receivers, labels, features[float32, n x feature_dim])."""
    rng = _rng(rng)
    s, r, labels = sbm(sizes, p_in, p_out, rng)
    means = rng.standard_normal((len(sizes), feature_dim))
    means *= mu / np.linalg.norm(means, axis=1, keepdims=True)
    x = means[labels] + rng.standard_normal((len(labels), feature_dim))
    return s, r, labels, x.astype(np.float32)


def meta_graph(style: str, k: int, eta: float, ambient: bool = False, fill_val: float = 0.5, rng=0):
    """The K x K DSBM meta-graph F: F[k, l] is the share of k<->l edges that point k -> l.

    Diagonal 0.5 (edges inside a cluster point either way). Pairs set by the style get (1-eta, eta);
    unset pairs (and, with `ambient`, every pair touching the last cluster) get `fill_val` both
    ways.
    Styles: path (k -> k+1), cyclic (path plus K-1 -> 0), complete (each pair a random
    orientation), star (centre c = floor((K-1)/2); even clusters point into the centre, odd ones
    out of it), multipartite (three groups split at ceil(K/9) and ceil(3K/9); group g -> g+1).
    """
    check_choice("style", style, STYLES)
    if not 0.0 <= eta <= 0.5:
        raise UserError(f"eta={eta} must lie in [0, 0.5] (the fraction of edges against the flow)")
    rng = _rng(rng)
    F = np.zeros((k, k))
    is_set = np.zeros((k, k), bool)

    def orient(a, b):  # planted flow a -> b
        F[a, b], F[b, a] = 1.0 - eta, eta
        is_set[a, b] = is_set[b, a] = True

    if style in ("path", "cyclic"):
        for i in range(k - 1):
            orient(i, i + 1)
        if style == "cyclic" and k > 2:
            orient(k - 1, 0)
    elif style == "complete":
        for i in range(k):
            for j in range(i + 1, k):
                if rng.random() < 0.5:
                    orient(i, j)
                else:
                    orient(j, i)
    elif style == "star":
        c = (k - 1) // 2
        for j in range(k):
            if j == c:
                continue
            if j % 2 == 0:
                orient(j, c)
            else:
                orient(c, j)
    elif style == "multipartite":
        a, b = math.ceil(k / 9), math.ceil(3 * k / 9)
        groups = [range(0, a), range(a, b), range(b, k)]
        for g in range(2):
            for i in groups[g]:
                for j in groups[g + 1]:
                    orient(i, j)
    if ambient:
        F[-1, :] = F[:, -1] = 0.0
        is_set[-1, :] = is_set[:, -1] = False
    F[~is_set] = fill_val
    np.fill_diagonal(F, 0.5)
    return F


def dsbm(n: int, k: int, p: float, F, size_ratio: float = 1.0, rng=0, permute: bool = True):
    """Directed SBM: edge i -> j (i != j) with probability p * F[label_i, label_j], independently
    for each ordered pair. Returns (senders, receivers, labels), nodes randomly permuted."""
    rng = _rng(rng)
    F = np.asarray(F, np.float64)
    if F.shape != (k, k):
        raise ValueError(f"meta-graph shape {F.shape} != ({k}, {k})")
    sizes = block_sizes(n, k, size_ratio)
    labels = np.repeat(np.arange(k), sizes).astype(np.int32)
    s, r = _block_bernoulli(labels, np.clip(p * F, 0.0, 1.0), rng, directed=True)
    if permute:
        perm = rng.permutation(n)  # new id of old node i is perm[i]
        new_labels = np.empty_like(labels)
        new_labels[perm] = labels
        s, r = _sort_edges(perm[s], perm[r])
        labels = new_labels
    return s, r, labels

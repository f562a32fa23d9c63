"""Synthetic sets that 1-WL (and hence any MPNN) cannot solve: CSL and EXP-style pairs.

- CSL, circular skip links (Murphy, Srinivasan, Rao & Ribeiro, "Relational Pooling for Graph
  Representations", ICML 2019): C_{n,s} is the cycle 0..n-1 plus chords i — i+s (mod n); the
  benchmark uses n = 41 and s ∈ {2, 3, 4, 5, 6, 9, 11, 12, 13, 16}, 15 randomly relabelled copies
  per class, 150 graphs. Every C_{41,s} is 4-regular, so with constant features 1-WL puts all of
  them in one class (accuracy bound 0.1) while they are pairwise non-isomorphic.
- EXP-style pairs (after Abboud, Ceylan, Grohe & Lukasiewicz, "The Surprising Power of Graph
  Neural Networks with Random Node Initialization", IJCAI 2021, whose EXP pairs (2i, 2i+1) are
  1-WL-equivalent, non-isomorphic and labelled (1, 0)): here each pair is two random d-regular
  graphs on the same n nodes (1-WL-equivalent with constant features: every node keeps one
  colour) whose triangle counts differ (so they are not isomorphic); the graph with more triangles
  gets label 1. Deliberate difference: EXP encodes SAT formulas with planar gadgets; this generator
  keeps only the property the benchmark tests (WL-equivalent, non-isomorphic, labels split within
  a pair), so a 1-WL-bounded model scores at most 50 %.

Host-side and deterministic given the seed; graphs come as ``(jraph.GraphsTuple, label)`` with
constant one-features and both directions of every edge, the format
``task.GraphClassification(graphs=...)`` reads.
"""

from __future__ import annotations

import jraph
import networkx as nx
import numpy as np

from netlab.errors import UserError
from netlab.graph import padding
from netlab.registry import check_range

CSL_SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)


def to_graphs_tuple(senders, receivers, num_nodes: int) -> jraph.GraphsTuple:
    """An undirected host graph (both directions, canonical order) with constant one-features."""
    s, r, _, _ = padding.canonical_edges(senders, receivers, num_nodes, symmetrize=True)
    return jraph.GraphsTuple(
        nodes=np.ones((num_nodes, 1), np.float32),
        edges=None,
        senders=s,
        receivers=r,
        globals=None,
        n_node=np.array([num_nodes], np.int32),
        n_edge=np.array([len(s)], np.int32),
    )


def csl_edges(n: int, skip: int):
    """Undirected edge list (one direction) of C_{n,skip}: the cycle plus the skip chords."""
    i = np.arange(n)
    return np.concatenate([i, i]), np.concatenate([(i + 1) % n, (i + skip) % n])


def csl(copies: int = 15, n: int = 41, skips=CSL_SKIPS, seed: int = 0):
    """``copies`` random relabellings of each C_{n,s}, label = index of s in ``skips``; ordered by
    class as in the benchmark's file."""
    rng = np.random.default_rng(seed)
    out = []
    for label, skip in enumerate(skips):
        s, r = csl_edges(n, skip)
        for _ in range(copies):
            perm = rng.permutation(n)
            out.append((to_graphs_tuple(perm[s], perm[r], n), label))
    return out


def triangles(g: nx.Graph) -> int:
    return sum(nx.triangles(g).values()) // 3


def wl_pair(n: int = 10, d: int = 3, seed: int = 0):
    """Two random d-regular graphs on n nodes with different triangle counts, as networkx graphs
    (more triangles first): 1-WL-equivalent and non-isomorphic."""
    check_range("d", d, 2, n - 2, integer=True)
    rng = np.random.default_rng(seed)
    first = nx.random_regular_graph(d, n, seed=int(rng.integers(1 << 31)))
    for _ in range(1000):
        other = nx.random_regular_graph(d, n, seed=int(rng.integers(1 << 31)))
        if triangles(other) != triangles(first):
            return tuple(sorted((first, other), key=triangles, reverse=True))
    raise UserError(f"no pair of {d}-regular graphs on {n} nodes with different triangle counts")


def exp_pairs(num_pairs: int, n=(10, 16), d: int = 3, seed: int = 0):
    """``num_pairs`` EXP-style pairs: graphs 2i (label 1) and 2i+1 (label 0) are 1-WL-equivalent
    and non-isomorphic; n nodes drawn per pair from the even numbers in [n[0], n[1]]."""
    rng = np.random.default_rng(seed)
    sizes = [v for v in range(n[0], n[1] + 1) if (v * d) % 2 == 0]
    out = []
    for _ in range(num_pairs):
        size = int(rng.choice(sizes))
        for label, g in zip((1, 0), wl_pair(size, d, int(rng.integers(1 << 31)))):
            e = np.array(g.edges()).reshape(-1, 2)
            out.append((to_graphs_tuple(e[:, 0], e[:, 1], size), label))
    return out


__all__ = ["CSL_SKIPS", "csl", "csl_edges", "exp_pairs", "to_graphs_tuple", "triangles", "wl_pair"]

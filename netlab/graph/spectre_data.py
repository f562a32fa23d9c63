"""SPECTRE-style synthetic graph sets (Martinkus et al., ICML 2022), regenerated offline.

DiGress (Vignac et al., ICLR 2023) evaluates unconditional generation on two of SPECTRE's sets;
the original ``planar_64_200.pt`` / ``sbm_200.pt`` files are not shipped, so they are regenerated
here deterministically (a seeded ``numpy`` generator; SPECTRE's own SBM sizes are unseeded):

- planar: the Delaunay triangulation (``scipy.spatial.Delaunay``) of 64 points uniform in the unit
  square; a triangulation is planar and connected by construction.
- sbm: 2-5 communities (uniform) of U{20..40} nodes each, edge probability ``p_in`` = 0.3 inside a
  community and ``p_out`` between communities (``networkx.stochastic_block_model``). SPECTRE's
  ``data.py`` uses p_out = 0.005; this is the default here (an argument, so the 0.05 some texts
  quote can be chosen).

Split (DiGress / SPECTRE, 200 graphs): 20 % test (40), then 80 % of the rest train (128) and the
remaining 32 validation, by one seeded permutation. Graphs are ``networkx.Graph`` (host-side);
:func:`to_dense` pads them to ``[G, n_max, n_max]`` adjacency arrays with node masks, the dense
layout DiGress trains on.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from scipy.spatial import Delaunay

from netlab.registry import check_choice, check_range

KINDS = ("planar", "sbm")


def planar_graph(rng, n: int = 64) -> nx.Graph:
    """The Delaunay triangulation of n uniform points in [0, 1]^2."""
    tri = Delaunay(rng.uniform(size=(n, 2)))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for simplex in tri.simplices:
        a, b, c = (int(v) for v in simplex)
        g.add_edges_from([(a, b), (b, c), (a, c)])
    return g


def sbm_graph(rng, p_in: float = 0.3, p_out: float = 0.005, k=(2, 5), size=(20, 40)) -> nx.Graph:
    """An SBM with U{k} communities of U{size} nodes each (bounds inclusive)."""
    num = int(rng.integers(k[0], k[1] + 1))
    sizes = [int(s) for s in rng.integers(size[0], size[1] + 1, num)]
    probs = np.full((num, num), p_out) + np.eye(num) * (p_in - p_out)
    g = nx.stochastic_block_model(sizes, probs.tolist(), seed=int(rng.integers(2**31)))
    return nx.Graph(nx.convert_node_labels_to_integers(g))  # drop the block attributes


def generate(kind: str, num_graphs: int = 200, seed: int = 0, **kw) -> list:
    """``num_graphs`` graphs of the set ``kind`` ("planar" or "sbm"), a function of ``seed``."""
    check_choice("data.name", kind, KINDS)
    check_range("data.num_graphs", num_graphs, 1, None, integer=True)
    rng = np.random.default_rng(seed)
    make = planar_graph if kind == "planar" else sbm_graph
    return [make(rng, **kw) for _ in range(num_graphs)]


def split(graphs: list, seed: int = 0, test_fraction: float = 0.2, train_fraction: float = 0.8):
    """(train, val, test): test = 20 %, train = 80 % of the rest, val the remainder (128/32/40)."""
    n = len(graphs)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    n_train = int(round(train_fraction * (n - n_test)))
    pick = lambda idx: [graphs[i] for i in idx]  # noqa: E731
    return (
        pick(perm[n_test : n_test + n_train]),
        pick(perm[n_test + n_train :]),
        pick(perm[:n_test]),
    )


def to_dense(graphs: list, n_max: int | None = None):
    """(adj int32 [G, n_max, n_max] with 0/1 entries, node_mask bool [G, n_max])."""
    n_max = n_max or max(g.number_of_nodes() for g in graphs)
    adj = np.zeros((len(graphs), n_max, n_max), np.int32)
    mask = np.zeros((len(graphs), n_max), bool)
    for i, g in enumerate(graphs):
        n = g.number_of_nodes()
        adj[i, :n, :n] = nx.to_numpy_array(g, nodelist=range(n), dtype=np.int32)
        mask[i, :n] = True
    return adj, mask


def from_dense(adj, mask) -> list:
    """networkx graphs from dense adjacencies [G, n, n] and node masks [G, n] (host arrays)."""
    out = []
    for a, m in zip(np.asarray(adj), np.asarray(mask)):
        n = int(m.sum())
        out.append(nx.from_numpy_array(np.asarray(a[:n, :n] > 0, np.int32)))
    return out


__all__ = ["from_dense", "generate", "planar_graph", "sbm_graph", "split", "to_dense"]

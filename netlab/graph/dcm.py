"""DCM: Battiloro et al., "From Latent Graph to Latent Topology Inference: Differentiable Cell
Complex Module" (ICLR 2024). Infer a cell complex on the graph (2-cells = short cycles), weight its
edges and cells with differentiable probabilities, and pass messages between edges through the
cells (a cell-complex network) alongside a node GNN.

Host side (:func:`cell_complex`, called once by :meth:`DCM.prepare_graph`): the undirected real
edges e = (u, v), u < v, oriented u -> v, and the candidate 2-cells = every simple cycle of length
3..``max_cycle_len`` (:func:`short_cycles`, a numpy enumerator that equals networkx
``simple_cycles`` with ``length_bound`` and takes seconds on Cora), each stored as its edge
indices and orientation signs (+1 where the cycle runs along the edge). Incidence
B1[u, e] = −1, B1[v, e] = +1 and B2[e, c] = sign, so B1 B2 = 0 (a cycle's boundary has no
boundary). Cells are padded to ``model.max_cells`` (more cycles: a one-line error naming it).

Layer (:class:`DCMConv`), on edge features x_e = W_e (x_u + x_v) with unsigned incidences
|B1|, |B2| (the authors' readout sums a node's incident edge features, Σ_{e ∋ i} x_e):

    p_e = exp(−e^τ ‖W_g x_u − W_g x_v‖²)                 edge probabilities (DGM-style, eq. 3)
    p_c = σ(a · (|B2|ᵀ y)_c + b)                           cell probabilities from the cell's edges
    A_down = |B1|ᵀ D⁻¹ |B1|,  A_up = C⁻¹ |B2| diag(p_c) |B2|ᵀ   (lower / upper edge adjacency)
    x_e' = tanh(W_0 y + W_d A_down y + W_u A_up y),  y = p ⊙ x_e,
    h'   = W_n Â x + W_b D⁻¹ |B1| x_e'                      node GCN plus the mean of its edges,

D = node degrees, C = the number of candidate cells on each edge (both at least 1). Both choices
are fixes measured on Cora (``bench/results/graph_dcm.md``): (1) signed cochains
x_e = W (x_v − x_u) with the Hodge parts B1ᵀB1, B2 B2ᵀ and divergence B1 x_e' only carry
neighbour *differences* (a high-pass signal), which on a homophilic graph removes the shared class
signal: that branch alone reached 29 % test accuracy and, added to the GCN term, let the model fit
the 140 training labels with it (train 100 %, test 29-41 %); (2) raw sums instead of means give
hubs (Cora: degree 168; edges on up to 65 short cycles) messages ~degree times larger than their
normalised GCN term (150-step probe, unsigned: 68 % with sums, 77 % with means). The orientation
u < v is then irrelevant and h' is permutation-equivariant. Deliberate differences from the
paper: candidate edges are the input graph's edges (the paper also infers the graph from features
with DGM's sampling), probabilities are used as soft weights (the expectation) instead of sampled
with α-entmax / Gumbel top-k, and the REINFORCE-style graph/polygon losses are not used (gradients
reach the probabilities through the weights).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import networkx as nx
import numpy as np
import scipy.sparse as sp

from netlab.graph import edge_sets
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.padding import GraphBudgetError
from netlab.graph.registries import MODELS
from netlab.registry import check_range

KEYS = ("dcm_edge_u", "dcm_edge_v", "dcm_edge_mask", "dcm_cell_edges", "dcm_cell_signs")


def short_cycles(edges, num_nodes: int, max_len: int) -> list:
    """Every simple cycle with 3..``max_len`` nodes of the undirected simple graph ``edges``
    [M, 2] (u < v, unique), once each, as node lists in canonical form: starting at its smallest
    node, second node < last node; sorted by (length, nodes). Exact, and equal as a set to
    networkx ``simple_cycles(g, length_bound=max_len)`` after canonicalisation (tested).

    Level-synchronous path growth with numpy: the simple paths s, v_1, ..., v_k with every
    v_i > s grow one CSR neighbour at a time; a path of >= 3 nodes whose last node is adjacent
    to s closes a cycle, kept when v_1 < v_k (one of its two directions). Cost O(#paths of
    <= max_len nodes whose start is their minimum), seconds on Cora for length 4, where
    networkx's general enumeration took minutes."""
    n = int(num_nodes)
    e = np.asarray(edges, np.int64).reshape(-1, 2)
    adj = sp.csr_matrix(
        (np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)
    )
    adj.sum_duplicates()
    indptr, indices = adj.indptr.astype(np.int64), adj.indices.astype(np.int64)
    keys = np.sort(np.r_[e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]])

    def adjacent(a, b):
        k = a * n + b
        i = np.minimum(np.searchsorted(keys, k), max(len(keys) - 1, 0))
        return (keys[i] == k) if len(keys) else np.zeros(len(a), bool)

    paths, out = e.copy(), []  # 2-node paths s -> v with v > s
    for size in range(3, max_len + 1):
        last = paths[:, -1]
        deg = indptr[last + 1] - indptr[last]
        row = np.repeat(np.arange(len(paths)), deg)
        offset = np.arange(len(row)) - np.repeat(np.cumsum(deg) - deg, deg)
        nxt = indices[np.repeat(indptr[last], deg) + offset]
        ok = nxt > paths[row, 0]
        for j in range(1, paths.shape[1]):
            ok &= nxt != paths[row, j]
        paths = np.concatenate([paths[row[ok]], nxt[ok, None]], 1)
        closes = adjacent(paths[:, -1], paths[:, 0]) & (paths[:, 1] < paths[:, -1])
        cyc = paths[closes]
        out.extend(map(list, cyc[np.lexsort(cyc.T[::-1])].tolist()))
    return out


def cell_complex(senders, receivers, num_nodes: int, max_cycle_len: int, max_cells: int):
    """(edges [M, 2] with u < v, cell_edges [max_cells, L] int, cell_signs [max_cells, L] float,
    num_cells) for the undirected simple graph of (senders, receivers); L = ``max_cycle_len``,
    padding entries have sign 0. More cycles than ``max_cells`` raises GraphBudgetError."""
    check_range("model.max_cycle_len", max_cycle_len, 3, None, integer=True)
    g = nx.Graph()
    g.add_nodes_from(range(int(num_nodes)))
    g.add_edges_from((int(a), int(b)) for a, b in zip(senders, receivers) if a != b)
    edges = np.asarray(sorted((min(a, b), max(a, b)) for a, b in g.edges()), np.int64)
    edges = edges.reshape(-1, 2)
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(edges)}
    cycles = short_cycles(edges, num_nodes, max_cycle_len)
    if len(cycles) > max_cells:
        raise GraphBudgetError(
            f"the graph has {len(cycles)} cycles of length <= {max_cycle_len} but "
            f"model.max_cells={max_cells}; raise model.max_cells (or lower model.max_cycle_len)"
        )
    ce = np.zeros((max(max_cells, 1), max_cycle_len), np.int32)
    cs = np.zeros((max(max_cells, 1), max_cycle_len), np.float32)
    for c, cyc in enumerate(cycles):
        for k, a in enumerate(cyc):
            b = cyc[(k + 1) % len(cyc)]
            ce[c, k] = index[(min(a, b), max(a, b))]
            cs[c, k] = 1.0 if a < b else -1.0
    return edges, ce, cs, len(cycles)


def boundary_matrices(edges, cell_edges, cell_signs, num_nodes: int):
    """Dense B1 [N, M] and B2 [M, C] of :func:`cell_complex`'s output (for tests and plots)."""
    m = len(edges)
    b1 = np.zeros((num_nodes, m))
    b1[edges[:, 0], np.arange(m)] = -1.0
    b1[edges[:, 1], np.arange(m)] = 1.0
    b2 = np.zeros((m, len(cell_edges)))
    for c, (idx, sgn) in enumerate(zip(cell_edges, cell_signs)):
        np.add.at(b2[:, c], idx[sgn != 0], sgn[sgn != 0])
    return b1, b2


class DCMConv(nn.Module):
    """One DCM layer (see module doc) on a graph whose ``norm`` holds :data:`KEYS`."""

    features: int
    normalize: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        f = self.features
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        nm = graph.norm
        u, v, em = nm["dcm_edge_u"], nm["dcm_edge_v"], nm["dcm_edge_mask"]
        ce, cs = nm["dcm_cell_edges"], nm["dcm_cell_signs"].astype(x.dtype)
        n, m = x.shape[0], u.shape[0]
        # Edge probabilities from feature distances (padding edges: 0).
        z = L.dense(f, False, "edge_metric", **kw)(x)
        tau = self.param("log_temperature", nn.initializers.zeros, (), self.param_dtype)
        d2 = jnp.square(z[u] - z[v]).sum(-1)
        p_edge = jnp.where(em, jnp.exp(-jnp.exp(tau.astype(x.dtype)) * d2), 0.0)
        y = p_edge[:, None] * L.dense(f, False, "edge_in", **kw)(x[u] + x[v])  # [M, F]

        ones = em.astype(x.dtype)
        deg = G.segment_sum(ones, v, n) + G.segment_sum(ones, u, n)  # real incident edges
        cells = G.segment_sum(jnp.abs(cs).reshape(-1), ce.reshape(-1), m)  # cells per edge
        if self.normalize:  # mean instead of sum: magnitudes independent of degree / #cells
            node_scale = 1.0 / jnp.maximum(deg, 1.0)
            edge_scale = 1.0 / jnp.maximum(cells, 1.0)
        else:
            node_scale, edge_scale = jnp.ones_like(deg), jnp.ones_like(cells)

        def gather(ye):  # D^-1 |B1| y: the mean of the node's edge features -> [N, F]
            return node_scale[:, None] * (G.segment_sum(ye, v, n) + G.segment_sum(ye, u, n))

        inc = jnp.abs(cs)  # |B2|: 1 on a cell's edges, 0 on padding
        face = (inc[..., None] * y[ce]).sum(1)  # |B2|ᵀ y [C, F]
        score = L.dense(1, True, "cell_score", **kw)(face)[:, 0]
        p_cell = jnp.where((cs != 0).any(1), nn.sigmoid(score), 0.0)
        self.sow("intermediates", "probabilities", (p_edge, p_cell))
        down = (lambda d: d[u] + d[v])(gather(y))  # |B1|ᵀ D^-1 |B1| y
        up = edge_scale[:, None] * G.segment_sum(
            (inc[..., None] * (p_cell[:, None] * face)[:, None, :]).reshape(-1, f),
            ce.reshape(-1),
            m,
        )  # C^-1 |B2| diag(p_c) |B2|ᵀ y
        ye = jnp.tanh(
            L.dense(f, False, "edge_self", **kw)(y)
            + L.dense(f, False, "edge_down", **kw)(down)
            + L.dense(f, False, "edge_up", **kw)(up)
        )
        ye = jnp.where(em[:, None], ye, 0.0)
        node = L.dense(f, True, "node", **kw)(G.normalized_adjacency_matmul(graph, x))
        return node + L.dense(f, False, "edge_out", **kw)(gather(ye))


@MODELS.register("dcm")
class DCM(nn.Module):
    """Node classifier: Linear encoder → ReLU → num_layers × [dropout → DCMConv → ReLU] → dropout →
    Linear head; the cell complex comes from :meth:`prepare_graph`."""

    TASK = "node"
    hidden: int = 32
    num_classes: int = 7
    num_layers: int = 2
    max_cycle_len: int = 4
    max_cells: int = 4096
    dropout: float = 0.5
    normalize: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def prepare_graph(self, graph):
        """The numpy graph with :func:`cell_complex`'s arrays in ``graph.norm`` (:data:`KEYS`);
        edge slots padded to the graph's own edge budget (they point at a padding node)."""
        s, r, n, big, _ = edge_sets.real_edges(graph)
        edges, ce, cs, _ = cell_complex(s, r, n, self.max_cycle_len, self.max_cells)
        size = max(graph.num_edges, 1)
        pad = min(n, big - 1)
        uv = np.full((size, 2), pad, np.int32)
        uv[: len(edges)] = edges
        norm = dict(graph.norm or {})
        norm.update(
            dcm_edge_u=uv[:, 0],
            dcm_edge_v=uv[:, 1],
            dcm_edge_mask=np.arange(size) < len(edges),
            dcm_cell_edges=ce,
            dcm_cell_signs=cs.astype(np.asarray(graph.edge_weight).dtype),
        )
        return graph.replace(norm=norm)

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.relu(L.dense(self.hidden, True, "encoder", **kw)(x))
        for i in range(self.num_layers):
            h = L.Dropout(self.dropout)(h, deterministic=not train)
            h = nn.relu(DCMConv(self.hidden, self.normalize, name=f"conv{i}", **kw)(graph, h))
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        return L.dense(self.num_classes, True, "head", **kw)(h)


__all__ = ["DCM", "DCMConv", "KEYS", "boundary_matrices", "cell_complex", "short_cycles"]

"""DRew: Gutteridge, Dong, Bronstein & Di Giovanni, "DRew: Dynamically Rewired Message Passing with
Delay" (ICML 2023). Layer-dependent rewiring with delayed skip connections, on GCN (DRew-GCN).

N_k(i) = nodes at shortest-path distance exactly k from i. At layer t (0-based) node i aggregates
from every hop k = 1..min(t+1, K), reading hop k's neighbours with delay τ_ν(k) = max(0, k − ν)
(eq. 5-6):

    a_{i,k}^(t) = AGG_k({h_j^(t − τ_ν(k)) : j ∈ N_k(i)}),
    h_i^(t+1)   = h_i^(t) + σ( Σ_{k ≤ t+1} W_{k,t} a_{i,k}^(t) ).

ν = 1 (default) delays a hop-k message by k − 1 layers, so information still travels one hop per
layer but along direct edges (the receptive field of an MPNN of the same depth); ν = −1 means
ν = ∞ (no delay: every hop reads the current state). As in the authors' code (``drew_gnn.py``),
AGG_k W_{k,t} is a separate GCN convolution per (k, t) on the distance-k edge list, normalised with
self-loops per hop (PyG ``GCNConv``), α_k = 1; the code's GraphGym BatchNorm per hop is left out.

Hop lists are computed once on the host (:meth:`DRew.prepare_graph`, called by the node task):
exact-distance edges from sparse reachability products R_k = R_{k−1} ∪ A R_{k−1}, O(K · nnz) per
hop, for k = 2..K (hop 1 is the graph itself); each list is padded to a multiple of 128 edges, or to
``max_hop_edges`` when set (a list that does not fit is a one-line error naming that setting).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from netlab.errors import UserError
from netlab.graph import edge_sets, gcn
from netlab.graph import layers as L
from netlab.graph.registries import MODELS


def hop_lists(senders, receivers, num_nodes: int, max_hop: int):
    """{k: (senders, receivers)} for k = 1..max_hop: the pairs j -> i with shortest-path distance
    (along edges j -> i) exactly k, sorted by (receiver, sender)."""
    n = int(num_nodes)
    a = sp.csr_matrix(
        (np.ones(len(senders), np.int32), (np.asarray(receivers), np.asarray(senders))), (n, n)
    )
    a.data[:] = 1
    reach = sp.identity(n, dtype=np.int32, format="csr")
    out = {}
    for k in range(1, int(max_hop) + 1):
        new = reach + a @ reach
        new.data[:] = 1
        exact = (new - reach).tocsr()
        exact.eliminate_zeros()
        exact.sort_indices()
        r = np.repeat(np.arange(n, dtype=np.int32), np.diff(exact.indptr))
        out[k] = (exact.indices.astype(np.int32), r)
        reach = new
    return out


@MODELS.register("drew")
class DRew(nn.Module):
    """DRew-GCN node classifier: Linear encoder -> num_layers DRew layers (ReLU, dropout, residual)
    -> Linear head. ``nu`` = ν (−1 = ∞); ``max_hops`` caps K (0: K = num_layers); ``max_hop_edges``
    fixes the padded length of each hop list (0: fitted to the graph); ``input_dropout`` drops input
    features before the encoder (as GCN does on Planetoid)."""

    TASK = "node"
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 3
    nu: int = 1
    max_hops: int = 0
    max_hop_edges: int = 0
    dropout: float = 0.0
    input_dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if not (self.nu == -1 or self.nu >= 1):
            raise UserError(f"model.nu={self.nu}: use an integer >= 1, or -1 for nu = infinity")
        if self.max_hops < 0 or self.max_hop_edges < 0:
            raise UserError("model.max_hops and model.max_hop_edges must be >= 0 (0 = automatic)")
        super().__post_init__()

    @property
    def hops(self) -> int:
        return self.num_layers if self.max_hops <= 0 else min(self.max_hops, self.num_layers)

    def delay(self, k: int) -> int:
        return 0 if self.nu == -1 else max(0, k - self.nu)

    def prepare_graph(self, graph):
        """The numpy :class:`Graph` with hop lists k = 2..K and their GCN coefficients in
        ``graph.norm`` (`netlab.graph.edge_sets`, names ``drew{k}``)."""
        s, r, n, _, _ = edge_sets.real_edges(graph)
        norm = dict(graph.norm or {})
        for k, (hs, hr) in hop_lists(s, r, n, self.hops).items():
            if k > 1:
                fix = "lower model.max_hops / model.num_layers"
                edge_sets.add(
                    norm, f"drew{k}", hs, hr, graph, self.max_hop_edges, "model.max_hop_edges", fix
                )
        return graph.replace(norm=norm)

    def hop_graph(self, graph, k: int):
        """Graph ``graph`` with its edges replaced by the hop-k list (hop 1: the graph itself)."""
        return graph if k == 1 else edge_sets.graph_with(graph, f"drew{k}", "DRew")

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = L.Dropout(self.input_dropout)(x, deterministic=not train)
        h = L.dense(self.hidden, True, "encoder", **kw)(x)
        history = [h]
        hop_graphs = {k: self.hop_graph(graph, k) for k in range(1, self.hops + 1)}
        for t in range(self.num_layers):
            agg = 0.0
            for k in range(1, min(t + 1, self.hops) + 1):
                src = history[max(0, t - self.delay(k))]
                conv = gcn.GCNConv(self.hidden, name=f"conv{t}_hop{k}", **kw)
                agg = agg + conv(hop_graphs[k], src)
            out = L.Dropout(self.dropout)(nn.relu(agg), deterministic=not train)
            history.append(history[-1] + out)
        return L.dense(self.num_classes, True, "head", **kw)(history[-1])


__all__ = ["DRew", "hop_lists"]

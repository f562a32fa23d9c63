"""NCN, neural common neighbours: Wang, Yang & Zhang, "Neural Common Neighbor with Completion for
Link Prediction" (ICLR 2024), without the completion step (NCNC).

With node representations h = MPNN(A, X), a pair (i, j) is scored from the two end nodes and the
sum over their common neighbours (the paper's NCN, §4):

    NCN(i, j) = MLP( h_i ⊙ h_j ‖ Σ_{k ∈ N(i) ∩ N(j)} h_k ).

``common_neighbours=False`` drops the second part: MLP(h_i ⊙ h_j), the usual GAE-style Hadamard
link predictor on the same MPNN (the baseline NCN is compared with). Here the MPNN is netlab's GCN
(``num_layers`` GCNConv layers, dropout, ReLU between, none after the last).

Common neighbours come from dense adjacency rows: Σ_{k ∈ CN(i,j)} h_k = (A_i ⊙ A_j) h, one
[P, N] product per batch of P pairs, built inside jit from the padded edge list (A binarised,
padding edges and self-pairs excluded); memory O(N² + P·N), meant for Planetoid-sized graphs
(padded sorted neighbour lists would be the scalable alternative).

Deliberate differences from the authors' code (``CNLinkPredictor``): the paper's concatenation,
not the code's β-weighted sum of two branch MLPs; no target-link removal (the full-batch
``graph.link_prediction`` task scores all training edges with the encoder seeing them, as for GAE);
no JK / LayerNorm options.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import layers as L
from netlab.graph.gcn import GCN
from netlab.graph.registries import MODELS


def adjacency(graph, dtype=jnp.float32):
    """Dense binary A [N, N] (A[i, j] = 1 iff an edge j -> i) of a padded graph; padding edges
    and self-loops excluded."""
    n = graph.num_nodes
    w = (graph.edge_mask & (graph.senders != graph.receivers)).astype(dtype)
    return jnp.zeros((n, n), dtype).at[graph.receivers, graph.senders].max(w)


def common_neighbour_rows(graph, pairs, dtype=jnp.float32):
    """[P, N] indicator rows of N(i) ∩ N(j) for ``pairs`` [P, 2] (row sums: the CN counts)."""
    a = adjacency(graph, dtype)
    return a[pairs[:, 0]] * a[pairs[:, 1]]


@MODELS.register("ncn")
class NCN(nn.Module):
    """NCN link scorer: GCN encoder (``hidden`` → ``out``) → MLP(h_i ⊙ h_j ‖ Σ_CN h_k) → logit.
    Call with ``pairs`` [P, 2] of node indices; returns [P] logits."""

    TASK = "link"
    hidden: int = 64
    out: int = 64
    num_layers: int = 2
    dropout: float = 0.0
    predictor_hidden: int = 64
    common_neighbours: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, graph, x, pairs, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GCN(
            self.hidden,
            self.out,
            self.num_layers,
            self.dropout,
            remat_policy=self.remat_policy,
            name="mpnn",
            **kw,
        )(graph, x, train)
        feats = h[pairs[:, 0]] * h[pairs[:, 1]]
        if self.common_neighbours:
            cn = common_neighbour_rows(graph, pairs, h.dtype) @ h
            feats = jnp.concatenate([feats, cn], -1)
        return L.MLP((self.predictor_hidden, 1), name="predictor", **kw)(feats)[:, 0]


__all__ = ["NCN", "adjacency", "common_neighbour_rows"]

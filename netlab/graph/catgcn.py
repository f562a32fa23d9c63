"""CatGCN: Chen et al., "CatGCN: Graph Convolutional Networks with Categorical Node Features"
(IEEE TKDE 2023). Interactions among a node's categorical features are modelled explicitly before
the graph propagation.

A node carries a set of categorical features (fields) with embeddings e_1..e_F ∈ R^d.

- Local interaction (bi-interaction pooling, as in NFM): the sum of all pairwise products

      Σ_{f<g} e_f ⊙ e_g = ½ [(Σ_f e_f)² − Σ_f e_f²]     (element-wise squares),

  computed in O(F d) by the right-hand side, then an MLP.
- Global interaction: the fields form a graph with adjacency P = (11ᵀ + p I) / (F + p) (every
  field linked to every other, self weight p: ``diag_probe``), one graph-convolution step
  E' = ReLU(P E W + b), mean over fields, then an MLP.
- Node representation h = β · global + (1 − β) · local (``balance``), then K hops of
  parameter-free GCN propagation Â^K h (the authors' code calls this step "PNAConv"; it is not
  Corso et al.'s PNA) and a linear classifier.

Categorical fields from ordinary feature matrices (netlab's choice, for the offline Planetoid /
geom-gcn bag-of-words data; the paper's Tencent/Alibaba user attributes are not available offline):
a node's fields are its ``max_fields`` largest positive features (for bag-of-words: its words, a
multi-hot categorical set), looked up in an embedding table with one row per feature; rows with
fewer positive entries mask the rest (F counts real fields only).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import MODELS
from netlab.sharding import axes


def bi_interaction(e, mask):
    """½[(Σ_f e_f)² − Σ_f e_f²] over the real fields; e [..., F, d], mask [..., F] -> [..., d]."""
    e = e * mask[..., None].astype(e.dtype)
    s = e.sum(-2)
    return 0.5 * (s * s - (e * e).sum(-2))


def field_graph_mix(e, mask, p: float):
    """P E with P = (11ᵀ + p I) / (F + p) over the F real fields of each node (padding fields
    give 0); e [..., F, d], mask [..., F]."""
    m = mask.astype(e.dtype)[..., None]
    e = e * m
    count = m.sum(-2, keepdims=True)
    return m * (e.sum(-2, keepdims=True) + p * e) / (count + p)


def categorical_fields(x, max_fields: int):
    """(ids [N, M], mask [N, M]): the ``max_fields`` largest entries of each row and whether they
    are positive."""
    vals, ids = jax.lax.top_k(x, max_fields)
    return ids, vals > 0


@MODELS.register("catgcn")
class CatGCN(nn.Module):
    """Node classifier: field embeddings (``embed_dim``) → β global + (1 − β) local interaction
    (width ``hidden``) → dropout → Â^K propagation (``hops``) → Linear head."""

    TASK = "node"
    hidden: int = 64
    num_classes: int = 7
    embed_dim: int = 16
    max_fields: int = 32
    diag_probe: float = 1.0
    balance: float = 0.9
    hops: int = 2
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ids, mask = categorical_fields(x, min(self.max_fields, x.shape[-1]))
        mask = mask & graph.node_mask[:, None]
        table = self.param(
            "embedding",
            axes.param(nn.initializers.normal(0.1), None, axes.EMBED),
            (x.shape[-1], self.embed_dim),
            self.param_dtype,
        )
        e = table.astype(x.dtype)[ids]  # [N, M, d]
        local = bi_interaction(e, mask)
        local = nn.relu(L.dense(self.hidden, True, "local", **kw)(local))
        mixed = nn.relu(
            L.dense(self.embed_dim, True, "field_conv", **kw)(
                field_graph_mix(e, mask, self.diag_probe)
            )
        )
        m = mask.astype(mixed.dtype)[..., None]
        pooled = (mixed * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)
        glob = nn.relu(L.dense(self.hidden, True, "global", **kw)(pooled))
        h = self.balance * glob + (1.0 - self.balance) * local
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        for _ in range(self.hops):
            h = G.normalized_adjacency_matmul(graph, h)
        return L.dense(self.num_classes, True, "head", **kw)(h)


__all__ = ["CatGCN", "bi_interaction", "categorical_fields", "field_graph_mix"]

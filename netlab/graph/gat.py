"""GAT: Veličković, Cucurull, Casanova, Romero, Liò & Bengio, "Graph Attention Networks"
(ICLR 2018). The attention layer (eqs. 1–6) and the paper's transductive model (§3.3).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.sharding import axes


@LAYERS.register("gat")
class GATConv(nn.Module):
    """e_ij = LeakyReLU(aᵀ[W h_i ‖ W h_j]), α_ij = softmax_j over N(i) ∪ {i},
    h'_i = ‖_k Σ_j α^k_ij W^k h_j (concatenated heads; averaged when ``concat`` is False, eq. 6).

    As PyG ``GATConv``: per-head source/target attention vectors, LeakyReLU slope 0.2, dropout on
    the attention coefficients, bias after aggregation, no activation inside the layer.
    """

    features: int
    heads: int = 1
    concat: bool = True
    negative_slope: float = 0.2
    dropout: float = 0.0
    add_self_loops: bool = True
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, deterministic: bool = True):
        h, edge_logits, self_logits = attention_logits(self, graph, x)
        return attend(self, graph, h, G.gather(graph, h), edge_logits, self_logits, deterministic)


def attention_logits(mod, graph, x):
    """GAT's W h [N, H, C] and its logits e_ij = LeakyReLU(a_src W h_j + a_dst W h_i) per edge
    [E, H] and per self-loop [N, H] (eq. 1), with the calling layer's parameters (`lin`,
    `att_src`, `att_dst`; heads, features, negative_slope fields). Shared with omega-GAT."""
    H, C = mod.heads, mod.features
    h = L.dense(H * C, False, "lin", mod.dtype, mod.param_dtype)(x).reshape(x.shape[0], H, C)
    init = axes.param(L.glorot, None, axes.HEADS, axes.KV)
    att_src = mod.param("att_src", init, (1, H, C), mod.param_dtype)
    att_dst = mod.param("att_dst", init, (1, H, C), mod.param_dtype)
    a_src, a_dst = (h * att_src).sum(-1), (h * att_dst).sum(-1)  # [N, H]
    edge_logits = nn.leaky_relu(
        G.gather(graph, a_src) + G.gather(graph, a_dst, "receivers"), mod.negative_slope
    )
    return h, edge_logits, nn.leaky_relu(a_src + a_dst, mod.negative_slope)


def attend(mod, graph, h_self, msgs, edge_logits, self_logits, deterministic):
    """Shared tail of GAT/GATv2: softmax incl. self-loop, attention dropout, aggregation, heads
    (concat or mean), bias. ``mod`` is the calling layer (heads, features, dropout, bias fields)."""
    if mod.add_self_loops:
        alpha, alpha_self = G.edge_softmax_with_self(graph, edge_logits, self_logits)
    else:
        alpha, alpha_self = G.edge_softmax(graph, edge_logits), None
    drop = L.Dropout(mod.dropout)
    alpha = drop(alpha, deterministic=deterministic)
    out = G.propagate(graph, msgs * alpha[..., None])  # [N, H, C]
    if alpha_self is not None:
        out = out + drop(alpha_self, deterministic=deterministic)[..., None] * h_self
    H, C = mod.heads, mod.features
    out = out.reshape(out.shape[0], H * C) if mod.concat else out.mean(1)
    if mod.use_bias:
        out = out + mod.param(
            "bias", axes.param(nn.initializers.zeros, axes.MLP), (out.shape[-1],), mod.param_dtype
        )
    return out


@MODELS.register("gat")
class GAT(nn.Module):
    """Transductive model (§3.3): dropout → GAT(heads × hidden, concat) → ELU → dropout →
    GAT(num_classes, ``out_heads`` averaged); dropout also on the attention coefficients.
    Subclasses swap the layer through ``conv_layer`` (GATv2 in ``gatv2.py``)."""

    TASK = "node"
    hidden: int = 8
    heads: int = 8
    out_heads: int = 1
    num_classes: int = 7
    dropout: float = 0.6
    dtype: Any = None
    param_dtype: Any = jnp.float32
    remat_policy: Any = None

    def conv_layer(self):
        return GATConv

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        conv = L.remat(self.conv_layer(), self.remat_policy, static_argnums=(3,))
        kw = dict(dropout=self.dropout, dtype=self.dtype, param_dtype=self.param_dtype)
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        x = conv(self.hidden, self.heads, name="conv0", **kw)(graph, x, not train)
        x = nn.elu(x)
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        return conv(self.num_classes, self.out_heads, concat=False, name="conv1", **kw)(
            graph, x, not train
        )

"""GATv2: Brody, Alon & Yahav, "How Attentive are Graph Attention Networks?" (ICLR 2022).
Dynamic attention (eq. 7) and GAT's transductive model built with it.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.gat import GAT, attend
from netlab.graph.registries import LAYERS, MODELS
from netlab.sharding import axes


@LAYERS.register("gatv2")
class GATv2Conv(nn.Module):
    """Eq. 7: e_ij = aᵀ LeakyReLU(W_s h_j + W_t h_i); messages W_s h_j.

    As PyG ``GATv2Conv`` (``share_weights=False``): separate source/target maps, per-head ``att``,
    attention dropout, concat or mean of heads, bias after aggregation.
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
        H, C = self.heads, self.features
        lin = lambda name: L.dense(H * C, True, name, self.dtype, self.param_dtype)  # noqa: E731
        xs = lin("lin_l")(x).reshape(x.shape[0], H, C)
        xt = lin("lin_r")(x).reshape(x.shape[0], H, C)
        att = self.param(
            "att", axes.param(L.glorot, None, axes.HEADS, axes.KV), (1, H, C), self.param_dtype
        )
        msgs = G.gather(graph, xs)
        pair = nn.leaky_relu(msgs + G.gather(graph, xt, "receivers"), self.negative_slope)
        edge_logits = (pair * att).sum(-1)
        self_logits = (nn.leaky_relu(xs + xt, self.negative_slope) * att).sum(-1)
        return attend(self, graph, xs, msgs, edge_logits, self_logits, deterministic)


@MODELS.register("gatv2")
class GATv2(GAT):
    """GAT's transductive model (dropout, heads, ELU, averaged output heads) with GATv2 layers."""

    def conv_layer(self):
        return GATv2Conv

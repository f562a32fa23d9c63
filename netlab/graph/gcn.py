"""GCN: Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks"
(ICLR 2017). The layer (eq. 2) and the paper's two-layer node classifier (eq. 9).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.sharding import axes


@LAYERS.register("gcn")
class GCNConv(nn.Module):
    """Graph convolution, eq. 2: H' = D̃^-1/2 Ã D̃^-1/2 H W + b with Ã = A + I, D̃ its degrees.

    As PyG ``GCNConv``: linear map without bias (Glorot), symmetric normalisation with self-loops
    (host-precomputed in ``graph.norm`` when present), bias added after propagation.
    """

    features: int
    use_bias: bool = True
    add_self_loops: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        h = L.dense(self.features, False, "lin", self.dtype, self.param_dtype)(x)
        h = G.normalized_adjacency_matmul(graph, h, self.add_self_loops)
        if self.use_bias:
            h = h + self.param(
                "bias",
                axes.param(nn.initializers.zeros, axes.MLP),
                (self.features,),
                self.param_dtype,
            )
        return h


@MODELS.register("gcn")
class GCN(nn.Module):
    """Node classifier (eq. 9): [dropout → GCNConv → ReLU] × (L−1) → dropout → GCNConv."""

    TASK = "node"
    hidden: int = 16
    num_classes: int = 7
    num_layers: int = 2
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        conv = L.remat(GCNConv, self.remat_policy)
        for i in range(self.num_layers):
            x = L.Dropout(self.dropout)(x, deterministic=not train)
            last = i == self.num_layers - 1
            x = conv(
                self.num_classes if last else self.hidden,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{i}",
            )(graph, x)
            if not last:
                x = nn.relu(x)
        return x

"""SGC: Wu, Souza, Zhang, Fifty, Yu & Weinberger, "Simplifying Graph Convolutional Networks"
(ICML 2019): K propagations with the GCN matrix, then one linear map (eq. 8).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS


def sgc_propagate(graph, x, k: int):
    """S^K X with S = D̃^-1/2 Ã D̃^-1/2 (eq. 8 without the classifier)."""
    for _ in range(k):
        x = G.normalized_adjacency_matmul(graph, x)
    return x


@LAYERS.register("sgc")
class SGConv(nn.Module):
    """Eq. 8: Ŷ = softmax(S^K X Θ); this layer returns the logits S^K X Θ + b.

    ``k = 0`` skips propagation, for features already propagated once on the host (PyG ``cached``).
    """

    features: int
    k: int = 2
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        lin = L.dense(self.features, self.use_bias, "lin", self.dtype, self.param_dtype)
        return lin(sgc_propagate(graph, x, self.k))


@MODELS.register("sgc")
class SGC(nn.Module):
    """Logistic regression on S^K X (``k = 0`` when the task propagated X on the host)."""

    TASK = "node"
    num_classes: int = 7
    k: int = 2
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        return SGConv(
            self.num_classes, self.k, dtype=self.dtype, param_dtype=self.param_dtype, name="conv"
        )(graph, x)

"""APPNP: Klicpera, Bojchevski & Günnemann, "Predict then Propagate: Graph Neural Networks meet
Personalized PageRank" (ICLR 2019). Personalised-PageRank propagation (eq. 8) and the model.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS


@LAYERS.register("appnp")
class APPNP(nn.Module):
    """Eq. 8: Z⁰ = H, Z^{k+1} = (1 − α) Â Z^k + α H, output Z^K; Â = D̃^-1/2 Ã D̃^-1/2.

    ``edge_dropout`` drops entries of Â in each power-iteration step (the paper's adjacency
    dropout). Propagation only, as PyG ``APPNP``, unless ``features`` is set and differs from the
    input width: then a bias-free linear map to ``features`` comes first (predict, then propagate).
    """

    features: Optional[int] = None
    k: int = 10
    alpha: float = 0.1
    edge_dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, h, deterministic: bool = True):
        h = L.project(self, h, self.features)
        edge_coef, self_coef = G.gcn_coefficients(
            graph, dtype=G.accum_dtype(h.dtype, graph.edge_weight.dtype)
        )
        z = h
        for _ in range(self.k):
            coef = L.Dropout(self.edge_dropout)(edge_coef, deterministic=deterministic)
            az = (
                G.propagate(graph, G.gather(graph, z), coef)
                + self_coef[:, None].astype(z.dtype) * z
            )
            z = (1.0 - self.alpha) * az + self.alpha * h
        return z


@MODELS.register("appnp")
class APPNPNet(nn.Module):
    """Predict with an MLP (dropout → Dense → ReLU → dropout → Dense), then propagate with
    personalised PageRank (:class:`APPNP`)."""

    TASK = "node"
    hidden: int = 64
    num_classes: int = 7
    dropout: float = 0.5
    k: int = 10
    alpha: float = 0.1
    edge_dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        lin = lambda f, name: L.dense(f, True, name, self.dtype, self.param_dtype)  # noqa: E731
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.relu(lin(self.hidden, "lin0")(x))
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        x = lin(self.num_classes, "lin1")(x)
        prop = APPNP(
            k=self.k,
            alpha=self.alpha,
            edge_dropout=self.edge_dropout,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="prop",
        )
        return prop(graph, x, not train)

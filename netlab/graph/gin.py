"""GIN: Xu, Hu, Leskovec & Jegelka, "How Powerful are Graph Neural Networks?" (ICLR 2019).
The layer (eq. 4.1) and a graph classifier with the paper's readout of every layer (eq. 4.2).
"""

from typing import Any, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS


@LAYERS.register("gin")
class GINConv(nn.Module):
    """Eq. 4.1: h'_v = MLP((1 + ε) h_v + Σ_{u∈N(v)} h_u). ``mlp_features`` lists the MLP's widths;
    an int f means the two-layer MLP (f, f) of the paper."""

    mlp_features: Union[int, Sequence[int]]
    eps: float = 0.0
    train_eps: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        f = self.mlp_features
        widths = (f, f) if isinstance(f, int) else tuple(f)
        if self.train_eps:
            eps = self.param("eps", nn.initializers.constant(self.eps), (), self.param_dtype)
        else:
            eps = self.eps
        agg = G.propagate(graph, G.gather(graph, x), graph.edge_weight)
        mlp = L.MLP(widths, dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")
        return mlp((1.0 + eps) * x + agg)


@MODELS.register("graph_classifier", "gin")
class GraphClassifier(nn.Module):
    """Graph-level classifier over padded batches: ``num_layers`` layers of ``conv`` (a name in
    ``registries.LAYERS``; GIN by default), each followed by ReLU and a masked per-graph readout;
    the readouts of all layers are concatenated (eq. 4.2), then dropout and an MLP head."""

    TASK = "graph"
    CHOICES = {"conv": LAYERS, "readout": G.AGGREGATIONS}
    hidden: int = 64
    num_classes: int = 2
    num_layers: int = 3
    conv: str = "gin"
    readout: str = "sum"
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        conv = L.remat(LAYERS.get(self.conv, "model.conv"), self.remat_policy)
        pooled = []
        for i in range(self.num_layers):
            x = conv(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv{i}")(
                graph, x
            )
            x = nn.relu(x)
            pooled.append(G.pool(graph, x, self.readout))
        h = jnp.concatenate(pooled, -1)
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        head = L.MLP(
            (self.hidden, self.num_classes),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )
        return head(h)

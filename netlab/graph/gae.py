"""GAE: Kipf & Welling, "Variational Graph Auto-Encoders" (NIPS 2016 workshop), the non-variational
graph auto-encoder: a GCN encoder and an inner-product decoder (eq. 2) for link prediction.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph.gcn import GCN
from netlab.graph.registries import MODELS


@MODELS.register("link_predictor", "gae")
class LinkPredictor(nn.Module):
    """Two-layer GCN encoder (Kipf & Welling 2017) + inner-product decoder: score(u, v) = z_uᵀ z_v.
    Call with ``pairs`` [P, 2] of node indices."""

    TASK = "link"
    hidden: int = 64
    out: int = 32
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, graph, x, pairs, train: bool = False):
        z = GCN(
            self.hidden,
            self.out,
            2,
            self.dropout,
            self.dtype,
            self.param_dtype,
            self.remat_policy,
            name="encoder",
        )(graph, x, train)
        return (z[pairs[:, 0]] * z[pairs[:, 1]]).sum(-1)

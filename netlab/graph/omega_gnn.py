"""ωGNN: Eliasof, Ruthotto & Treister, "Improving Graph Neural Networks with Learnable Propagation
Operators" (ICML 2023). ωGCN, channel-wise learnable mixing of smoothing and sharpening.

The paper's generic layer is f^(l+1) = σ(S^(l) f^(l) K^(l)) (§1). ωGCN replaces the fixed GCN
operator Â = D̃^-1/2 (A + I) D̃^-1/2 by one operator per channel c,

    S_{ω_c} = I − ω_c (I − Â) = (1 − ω_c) I + ω_c Â,

with ω ∈ R^C learned per layer: ω_c = 1 is GCN's Â (smoothing), ω_c = 0 the identity, ω_c ∈ (0, 1)
a lazier smoothing and ω_c > 1 a sharpening operator (negative self weight). The eigenvalues of
S_ω are 1 − ω λ_i(I − Â) with λ_i ∈ [0, 2), and D̃^{1/2} 1 is a fixed point for every ω.

Deliberate choices: ω is initialised at 1 (the layer starts as GCN); the node classifier (encoder,
``num_layers`` × [dropout → ωGCN → ReLU] with a residual connection, linear head) is netlab's
arrangement in the paper's spirit, not a transcription of the authors' training code (not read).
The attention variant ωGAT is not implemented.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.sharding import axes


def omega_propagate(graph, x, omega):
    """S_ω X = X − ω ⊙ (X − Â X), ω broadcasting against X's channels (Â with self-loops)."""
    ax = G.normalized_adjacency_matmul(graph, x)
    return x - jnp.asarray(omega, x.dtype) * (x - ax)


@LAYERS.register("omega")
class OmegaGCNConv(nn.Module):
    """ωGCN layer (no activation): S_ω X K + b, ω ∈ R^{F_in} initialised at ``omega_init``."""

    features: int
    omega_init: float = 1.0
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        omega = self.param(
            "omega",
            axes.param(nn.initializers.constant(self.omega_init), axes.EMBED),
            (x.shape[-1],),
            self.param_dtype,
        )
        h = omega_propagate(graph, x, omega.astype(x.dtype))
        return L.dense(self.features, self.use_bias, "lin", self.dtype, self.param_dtype)(h)


@MODELS.register("omega")
class OmegaGCN(nn.Module):
    """Node classifier: Linear encoder → ReLU → num_layers × [h + ReLU(ωGCN(dropout h))] →
    dropout → Linear head."""

    TASK = "node"
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 2
    omega_init: float = 1.0
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        h = nn.relu(L.dense(self.hidden, True, "encoder", **kw)(x))
        for i in range(self.num_layers):
            d = L.Dropout(self.dropout)(h, deterministic=not train)
            h = h + nn.relu(
                OmegaGCNConv(self.hidden, self.omega_init, name=f"conv{i}", **kw)(graph, d)
            )
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        return L.dense(self.num_classes, True, "head", **kw)(h)


__all__ = ["OmegaGCN", "OmegaGCNConv", "omega_propagate"]

"""ωGNN: Eliasof, Ruthotto & Treister, "Improving Graph Neural Networks with Learnable Propagation
Operators" (ICML 2023). ωGCN and ωGAT, channel-wise learnable mixing of smoothing and sharpening.

The paper's generic layer is f^(l+1) = σ(S^(l) f^(l) K^(l)) (§1). ωGCN replaces the fixed GCN
operator Â = D̃^-1/2 (A + I) D̃^-1/2 by one operator per channel c,

    S_{ω_c} = I − ω_c (I − Â) = (1 − ω_c) I + ω_c Â,

with ω ∈ R^C learned per layer: ω_c = 1 is GCN's Â (smoothing), ω_c = 0 the identity, ω_c ∈ (0, 1)
a lazier smoothing and ω_c > 1 a sharpening operator (negative self weight). The eigenvalues of
S_ω are 1 − ω λ_i(I − Â) with λ_i ∈ [0, 2), and D̃^{1/2} 1 is a fixed point for every ω.

ωGAT puts GAT's attention matrix (Veličković et al. 2018, eqs. 1–3; softmax over N(i) ∪ {i})
in place of Â, one matrix per head h,

    S_att^h[i, j] = softmax_j LeakyReLU(a_srcʰ · W^h x_j + a_dstʰ · W^h x_i),
    out^h = W^h X − ω^h ⊙ (W^h X − S_att^h W^h X) = (1 − ω^h) ⊙ W^h X + ω^h ⊙ S_att^h W^h X,

with ω ∈ R^{heads × features} (channel-wise per head). The attention needs W X first, so ω mixes
the channels of W X (ωGCN's ω acts on the input channels, before K). ω = 1 is GAT exactly (same
parameters), ω = 0 the linear map W X + b.

Deliberate choices: ω is initialised at 1 (the layer starts as GCN / GAT); the node classifier
(encoder, ``num_layers`` × [dropout → ωGCN or ωGAT → ReLU] with a residual connection, linear
head) is netlab's arrangement in the paper's spirit, not a transcription of the authors' training
code (not read). The ωGAT classifier averages its heads (the paper's several-operator mixing is
read as one ω per head and channel).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import gat
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


@LAYERS.register("omega_gat")
class OmegaGATConv(nn.Module):
    """ωGAT layer (no activation): per head (1 − ω) ⊙ W X + ω ⊙ S_att W X, heads concatenated
    (``concat``) or averaged, then bias. Parameter names as GAT's (``lin``, ``att_src``,
    ``att_dst``, ``bias``) plus ``omega`` [heads, features]."""

    features: int
    heads: int = 1
    concat: bool = True
    omega_init: float = 1.0
    negative_slope: float = 0.2
    dropout: float = 0.0
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, deterministic: bool = True):
        H, C = self.heads, self.features
        h, edge_logits, self_logits = gat.attention_logits(self, graph, x)
        omega = self.param(
            "omega",
            axes.param(nn.initializers.constant(self.omega_init), axes.HEADS, axes.KV),
            (H, C),
            self.param_dtype,
        )
        alpha, alpha_self = G.edge_softmax_with_self(graph, edge_logits, self_logits)
        drop = L.Dropout(self.dropout)
        alpha = drop(alpha, deterministic=deterministic)
        sh = G.propagate(graph, G.gather(graph, h) * alpha[..., None])
        sh = sh + drop(alpha_self, deterministic=deterministic)[..., None] * h  # S_att W X
        out = h - omega.astype(h.dtype) * (h - sh)
        out = out.reshape(out.shape[0], H * C) if self.concat else out.mean(1)
        if self.use_bias:
            out = out + self.param(
                "bias",
                axes.param(nn.initializers.zeros, axes.MLP),
                (out.shape[-1],),
                self.param_dtype,
            )
        return out


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
            h = h + nn.relu(self.conv(i, kw, graph, d, train))
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        return L.dense(self.num_classes, True, "head", **kw)(h)

    def conv(self, i, kw, graph, x, train):
        return OmegaGCNConv(self.hidden, self.omega_init, name=f"conv{i}", **kw)(graph, x)


@MODELS.register("omega_gat")
class OmegaGAT(OmegaGCN):
    """OmegaGCN's classifier with ωGAT layers (``heads`` averaged, attention dropout
    ``dropout``)."""

    heads: int = 1

    def conv(self, i, kw, graph, x, train):
        layer = OmegaGATConv(
            self.hidden,
            self.heads,
            concat=False,
            omega_init=self.omega_init,
            dropout=self.dropout,
            name=f"conv{i}",
            **kw,
        )
        return layer(graph, x, not train)


__all__ = ["OmegaGAT", "OmegaGATConv", "OmegaGCN", "OmegaGCNConv", "omega_propagate"]

"""DeeperGCN: Li, Xiong, Thabet & Ghanem, "DeeperGCN: All You Need to Train Deeper GCNs" (2020).
GENConv with softmax aggregation (eqs. 3–4), MsgNorm (eq. 7), the pre-activation res+ block
(§3.4, after Li et al. 2019, DeepGCNs) and the node classifier built from them.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.registry import check_choice

GEN_AGGREGATIONS = ("softmax",) + G.AGGREGATIONS


class MessageNorm(nn.Module):
    """MsgNorm, eq. 7: h' = h + s · ‖h‖₂ · m / ‖m‖₂ with a (learnable) scalar s; returns the
    normalised message (the caller adds h)."""

    learn_scale: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, msg):
        if self.learn_scale:
            scale = self.param("scale", nn.initializers.ones, (1,), self.param_dtype)
        else:
            scale = 1.0
        msg = msg / jnp.maximum(jnp.linalg.norm(msg, axis=-1, keepdims=True), 1e-12)
        return msg * jnp.linalg.norm(x, axis=-1, keepdims=True) * scale


@LAYERS.register("genconv")
class GENConv(nn.Module):
    """Generalised aggregation, eqs. 3–4 (SoftMax_Agg_β): m_vu = ReLU(h_u + e_vu) + ε,
    m_v = Σ_u softmax_u(β m_vu) ⊙ m_vu (channel-wise), then h'_v = MLP(W_dst h_v + m_v), with
    MsgNorm (eq. 7) applied to m_v first when ``msg_norm``.

    Matches PyG ``GENConv`` (``torch_geometric/nn/conv/gen_conv.py`` as of PyG 2.5; its
    docstring says ``bias`` defaults to True, its signature says False) for a homogeneous
    graph, defaults included (``norm='batch'``, ``bias=False``, ``learn_t=False``, ``expansion=2``,
    ``eps=1e-7``): when the input width differs from ``features`` the messages use their own
    projection ``lin_src`` and the root term its own ``lin_dst`` (both with ``bias``); edge
    features are projected by ``lin_edge`` only when their width differs; MsgNorm scales by the
    norm of the *unprojected* input, as PyG's ``msg_norm(x[1], out)``; the MLP is
    ``[features, expansion·features, …, features]`` with ``norm`` (``layers.NORMS``) and ReLU
    between its linear maps, all with or without ``bias``. ``norm='batch'`` takes its statistics
    over real nodes only (``graph.node_mask``), so padding never enters them; ``train`` selects
    batch statistics. ``aggr='mean'|'sum'|'max'`` swap the softmax for a plain aggregation.
    """

    CHOICES = {"aggr": GEN_AGGREGATIONS, "norm": L.NORMS}
    features: int
    aggr: str = "softmax"
    t: float = 1.0
    learn_t: bool = False
    msg_norm: bool = False
    learn_msg_scale: bool = False
    norm: str = "batch"
    num_mlp_layers: int = 2
    expansion: int = 2
    eps: float = 1e-7
    bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _lin(self, v, name):
        if v.shape[-1] == self.features:
            return v
        return L.dense(self.features, self.bias, name, self.dtype, self.param_dtype)(v)

    @nn.compact
    def __call__(self, graph, x, edge_attr=None, train: bool = False):
        check_choice("norm", self.norm, L.NORMS)
        check_choice("aggr", self.aggr, GEN_AGGREGATIONS)
        msg = G.gather(graph, self._lin(x, "lin_src"))
        if edge_attr is not None:
            msg = msg + self._lin(edge_attr, "lin_edge")
        msg = nn.relu(msg) + self.eps
        if self.aggr == "softmax":
            if self.learn_t:
                t = self.param("t", nn.initializers.constant(self.t), (), self.param_dtype)
            else:
                t = self.t
            alpha = G.edge_softmax(graph, msg * t)
            out = G.propagate(graph, msg * alpha)
        else:
            out = G.propagate(graph, msg, graph.edge_mask.astype(msg.dtype), aggr=self.aggr)
        if self.msg_norm:
            out = MessageNorm(self.learn_msg_scale, self.param_dtype, name="msg_norm")(x, out)
        out = out + self._lin(x, "lin_dst")
        widths = [self.expansion * self.features] * (self.num_mlp_layers - 1) + [self.features]
        mlp = L.MLP(
            tuple(widths),
            norm=self.norm,
            use_bias=self.bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )
        return mlp(out, graph.node_mask, train)


class ResPlusBlock(nn.Module):
    """Pre-activation residual block "res+": x' = x + Conv(Dropout(ReLU(Norm(x))))."""

    conv: nn.Module
    dropout: float = 0.0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, edge_attr=None, deterministic: bool = True):
        h = nn.relu(nn.LayerNorm(param_dtype=self.param_dtype, name="norm")(x))
        h = L.Dropout(self.dropout)(h, deterministic=deterministic)
        return x + self.conv(graph, h, edge_attr, not deterministic)


@MODELS.register("deepergcn")
class DeeperGCN(nn.Module):
    """Encoder → GENConv → [res+ GENConv blocks] × (L−1) → Norm → ReLU → dropout → Dense.

    The GENConv MLPs use ``mlp_norm`` and ``bias``; the defaults (LayerNorm, no bias) are those of
    PyG's DeeperGCN example (``examples/ogbn_proteins_deepgcn.py``: ``GENConv(norm='layer')``,
    PyG's default ``bias=False``). The block and output norms are LayerNorms, as there.
    """

    TASK = "node"
    CHOICES = {"mlp_norm": L.NORMS}
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 3
    dropout: float = 0.1
    t: float = 1.0
    learn_t: bool = True
    msg_norm: bool = False
    mlp_norm: str = "layer"
    bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False, edge_attr=None):
        pd = self.param_dtype
        x = L.dense(self.hidden, True, "encoder", self.dtype, pd)(x)
        gen = L.remat(GENConv, self.remat_policy, static_argnums=(4,))

        def conv(i):
            return gen(
                self.hidden,
                t=self.t,
                learn_t=self.learn_t,
                msg_norm=self.msg_norm,
                norm=self.mlp_norm,
                bias=self.bias,
                dtype=self.dtype,
                param_dtype=pd,
                name=f"conv{i}",
            )

        x = conv(0)(graph, x, edge_attr, train)
        for i in range(1, self.num_layers):
            x = ResPlusBlock(conv(i), self.dropout, pd, name=f"block{i}")(
                graph, x, edge_attr, not train
            )
        x = nn.relu(nn.LayerNorm(param_dtype=pd, name="norm")(x))
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        return L.dense(self.num_classes, True, "head", self.dtype, pd)(x)

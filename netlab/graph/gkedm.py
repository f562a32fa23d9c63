"""GKEDM: graph knowledge enhancement and distillation module ("Attention is all you need for
boosting graph convolutional neural network", 2024): a multi-head attention plug-in on the hidden
states a GNN layer produces, and attention distillation from a teacher's attention maps to a
student's.

Enhancement (:class:`GKEDMConv`, a wrapper around any registered layer ``base``): h = base(G, x),
then per head k, over i's in-neighbours and i itself (the self-loop kept out of the edge list as in
GAT),

    α^k_ij = softmax_{j ∈ N(i) ∪ {i}} (q^k_i · k^k_j / √d),  q^k = W_q^k h, k^k = W_k^k h,
    h'_i = h_i + g ⊙ W_o ‖_k Σ_j α^k_ij W_v^k h_j,

with a channel gate g initialised at 0, so the plug-in starts as the base layer exactly and learns
how much enhancement to add. The maps (α [E, heads], α_self [N, heads]) are sown into the
``intermediates`` collection under ``attention`` for distillation.

Distillation (:func:`attention_distillation_loss`): the mean over real nodes and heads of
KL(α_teacher,i || α_student,i), each α_i a distribution over N(i) ∪ {i}; zero iff the maps agree.
The paper adds it to the student's cross-entropy with a weight (and logit distillation, which any
KD loss gives); ``netlab.graph.gkedm_task`` trains a teacher and then a student that way
(``configs/graph/gkedm.py:mode=distill``).

Deliberate choices (the paper's code was not read): neighbourhood attention rather than attention
over all nodes (keeps the padding budget's O(E) cost), the zero-initialised gate, the KL direction
(teacher as target, as in knowledge distillation).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.sharding import axes


@LAYERS.register("gkedm")
class GKEDMConv(nn.Module):
    """``base`` layer (a ``model.conv`` name) followed by the gated attention plug-in (see module
    doc); ``key_dim`` per head (default: the base's output width)."""

    features: int
    base: str = "gcn"
    heads: int = 2
    key_dim: int = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = LAYERS.get(self.base, "model.conv")(self.features, name="base", **kw)(graph, x)
        n, width = h.shape
        H, dk = self.heads, self.key_dim or width
        q = L.dense(H * dk, False, "query", **kw)(h).reshape(n, H, dk)
        k = L.dense(H * dk, False, "key", **kw)(h).reshape(n, H, dk)
        v = L.dense(H * width, False, "value", **kw)(h).reshape(n, H, width)
        scale = 1.0 / jnp.sqrt(jnp.asarray(dk, q.dtype))
        edge_logits = (G.gather(graph, q, "receivers") * G.gather(graph, k)).sum(-1) * scale
        self_logits = (q * k).sum(-1) * scale
        alpha, alpha_self = G.edge_softmax_with_self(graph, edge_logits, self_logits)
        self.sow("intermediates", "attention", (alpha, alpha_self))
        agg = G.propagate(graph, G.gather(graph, v) * alpha[..., None])
        agg = (agg + alpha_self[..., None] * v).reshape(n, H * width)
        gate = self.param(
            "gate", axes.param(nn.initializers.zeros, axes.MLP), (width,), self.param_dtype
        )
        return h + gate.astype(h.dtype) * L.dense(width, True, "out", **kw)(agg)


def attention_distillation_loss(graph, teacher, student, eps: float = 1e-12):
    """Mean over real nodes and heads of KL(teacher_i || student_i); ``teacher`` and ``student``
    are (α [E, heads], α_self [N, heads]) pairs as :class:`GKEDMConv` sows them."""
    (te, ts), (se, ss) = teacher, student
    kl_edge = jnp.where(graph.edge_mask[:, None], te * (jnp.log(te + eps) - jnp.log(se + eps)), 0.0)
    kl = G.propagate(graph, kl_edge) + ts * (jnp.log(ts + eps) - jnp.log(ss + eps))
    w = graph.node_mask.astype(kl.dtype)[:, None]
    return (kl * w).sum() / jnp.maximum(w.sum() * kl.shape[-1], 1.0)


@MODELS.register("gkedm")
class GKEDM(nn.Module):
    """Node classifier: num_layers × [dropout → GKEDMConv(conv) → ReLU] → dropout → Linear head."""

    TASK = "node"
    CHOICES = {"conv": LAYERS}
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 2
    conv: str = "gcn"
    heads: int = 2
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x
        for i in range(self.num_layers):
            h = L.Dropout(self.dropout)(h, deterministic=not train)
            h = nn.relu(
                GKEDMConv(self.hidden, self.conv, self.heads, name=f"conv{i}", **kw)(graph, h)
            )
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        return L.dense(self.num_classes, True, "head", **kw)(h)


__all__ = ["GKEDM", "GKEDMConv", "attention_distillation_loss"]

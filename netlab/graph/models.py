"""Graph models built from ``layers.py``: node classifiers (GCN, SGC, GAT, GATv2, APPNP, DeeperGCN),
a graph classifier (GIN / GCN + pooling) and a link predictor (GCN encoder + dot-product decoder).

Pure linen modules with plain hyperparameter fields, called as ``model(graph, x, train=...)``.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L


class GCN(nn.Module):
    """Kipf & Welling (2017) node classifier: [dropout → GCNConv → ReLU] × (L−1) → dropout → GCNConv."""
    hidden: int = 16
    num_classes: int = 7
    num_layers: int = 2
    dropout: float = 0.5
    dtype: jnp.dtype = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        for i in range(self.num_layers):
            x = L.Dropout(self.dropout)(x, deterministic=not train)
            last = i == self.num_layers - 1
            x = L.GCNConv(self.num_classes if last else self.hidden, dtype=self.dtype, name=f"conv{i}")(graph, x)
            if not last:
                x = nn.relu(x)
        return x


class SGC(nn.Module):
    """Wu et al. (2019) logistic regression on S^K X (``k = 0`` when X was propagated on the host)."""
    num_classes: int = 7
    k: int = 2
    dtype: jnp.dtype = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        return L.SGConv(self.num_classes, self.k, dtype=self.dtype, name="conv")(graph, x)


class GAT(nn.Module):
    """Veličković et al. (2018) transductive model: dropout → GAT(heads × hidden, concat) → ELU →
    dropout → GAT(num_classes, ``out_heads`` averaged); dropout also on attention coefficients."""
    hidden: int = 8
    heads: int = 8
    out_heads: int = 1
    num_classes: int = 7
    dropout: float = 0.6
    v2: bool = False
    dtype: jnp.dtype = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        conv = L.GATv2Conv if self.v2 else L.GATConv
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        x = conv(self.hidden, self.heads, dropout=self.dropout, dtype=self.dtype, name="conv0")(graph, x, not train)
        x = nn.elu(x)
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        return conv(self.num_classes, self.out_heads, concat=False, dropout=self.dropout, dtype=self.dtype,
                    name="conv1")(graph, x, not train)


class APPNPNet(nn.Module):
    """Klicpera et al. (2019): predict with an MLP (dropout → Dense → ReLU → dropout → Dense), then
    propagate with personalised PageRank (``layers.APPNP``)."""
    hidden: int = 64
    num_classes: int = 7
    dropout: float = 0.5
    k: int = 10
    alpha: float = 0.1
    edge_dropout: float = 0.0
    dtype: jnp.dtype = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.relu(L._dense(self.hidden, True, "lin0", self.dtype)(x))
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        x = L._dense(self.num_classes, True, "lin1", self.dtype)(x)
        return L.APPNP(self.k, self.alpha, self.edge_dropout, name="prop")(graph, x, not train)


class DeeperGCN(nn.Module):
    """Li et al. (2020) DeeperGCN: encoder → GENConv → [res+ GENConv blocks] × (L−1) → Norm → ReLU →
    dropout → Dense."""
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 3
    dropout: float = 0.1
    t: float = 1.0
    learn_t: bool = True
    msg_norm: bool = False
    dtype: jnp.dtype = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False, edge_attr=None):
        x = L._dense(self.hidden, True, "encoder", self.dtype)(x)
        conv = lambda i: L.GENConv(self.hidden, t=self.t, learn_t=self.learn_t, msg_norm=self.msg_norm,
                                   dtype=self.dtype, name=f"conv{i}")
        x = conv(0)(graph, x, edge_attr)
        for i in range(1, self.num_layers):
            x = L.ResPlusBlock(conv(i), self.dropout, name=f"block{i}")(graph, x, edge_attr, not train)
        x = nn.relu(nn.LayerNorm(name="norm")(x))
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        return L._dense(self.num_classes, True, "head", self.dtype)(x)


class GraphClassifier(nn.Module):
    """Graph-level classifier over padded batches: GIN (Xu et al. 2019, sum readout of every layer,
    eq. 4.2) or GCN layers, masked pooling per graph, then an MLP head."""
    hidden: int = 64
    num_classes: int = 2
    num_layers: int = 3
    conv: str = "gin"
    readout: str = "sum"
    dropout: float = 0.0
    dtype: jnp.dtype = None

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        pooled = []
        for i in range(self.num_layers):
            if self.conv == "gin":
                x = L.GINConv((self.hidden, self.hidden), dtype=self.dtype, name=f"conv{i}")(graph, x)
            else:
                x = L.GCNConv(self.hidden, dtype=self.dtype, name=f"conv{i}")(graph, x)
            x = nn.relu(x)
            pooled.append(G.pool(graph, x, self.readout))
        h = jnp.concatenate(pooled, -1)
        h = L.Dropout(self.dropout)(h, deterministic=not train)
        return L.MLP((self.hidden, self.num_classes), dtype=self.dtype, name="head")(h)


class LinkPredictor(nn.Module):
    """GCN encoder (Kipf & Welling 2017) + inner-product decoder (Kipf & Welling 2016, GAE eq. 2):
    score(u, v) = z_uᵀ z_v. Call with ``pairs`` [P, 2] of node indices."""
    hidden: int = 64
    out: int = 32
    dropout: float = 0.0
    dtype: jnp.dtype = None

    @nn.compact
    def __call__(self, graph, x, pairs, train: bool = False):
        z = GCN(self.hidden, self.out, 2, self.dropout, self.dtype, name="encoder")(graph, x, train)
        return (z[pairs[:, 0]] * z[pairs[:, 1]]).sum(-1)


MODELS = {"gcn": GCN, "sgc": SGC, "gat": GAT, "appnp": APPNPNet, "deepergcn": DeeperGCN,
          "graph_classifier": GraphClassifier, "link_predictor": LinkPredictor}


def build(name: str, num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """Model by name with plain keyword hyperparameters (``gatv2`` = GAT with ``v2=True``)."""
    if name == "gatv2":
        name, kwargs = "gat", dict(kwargs, v2=True)
    if name not in MODELS:
        raise ValueError(f"unknown graph model {name!r}; choose one of {', '.join(sorted(MODELS))}, gatv2")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return MODELS[name](**kwargs)

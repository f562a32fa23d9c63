"""k,l-GNN: Zhou, Wang & Zhang, "From Relational Pooling to Subgraph GNNs: A Universal Framework for
More Expressive Graph Neural Networks" (ICML 2023).

(k,l)-WL labels an ordered k-tuple of nodes (relational pooling on k nodes: the tuple's i-th node
gets mark i, every other node mark 0), runs l-WL on the marked graph, and pools the colours of all
marked copies. The k,l-GNN replaces l-WL by an l-order GNN; here l = 1 (a GIN, Xu et al. 2019,
the 1-WL-equivalent MPNN) and k ∈ {1, 2}:

    h⁰_{t,v} = W x_v + E[mark_t(v)],   h^{i+1}_{t,·} = ReLU(N(GIN(h^i_{t,·})))  on each copy t,
    z_t = READOUT_v h^L_{t,v},         y_G = MLP( mean_t z_t ).

(1,1) is the node-marking subgraph GNN (ID-GNN / NGNN / ESAN family) and already separates graphs
1-WL cannot (e.g. the CSL graphs, C6 vs two triangles); a larger k is strictly stronger.

Tuples are chosen once per graph on the host (:meth:`KLGNN.prepare_graph`, called by the graph
task on each padded batch; per-graph results cached): all n (k = 1) or n(n−1) (k = 2) ordered
tuples when there are at most ``num_tuples``, else ``num_tuples`` of them drawn without
replacement with numpy's generator seeded by ``seed`` (the paper's sampled variant; exact
permutation invariance holds only for enumeration). Each tuple is a full marked copy of its graph,
packed with :mod:`netlab.graph.graph_patches`, so copies per batch <= ``num_tuples`` × padded
nodes: ``num_tuples`` is the memory knob.

Deliberate differences: tuples are mean-pooled (not summed), so sampled and enumerated graphs share
a scale; N is ``norm`` = graph (default: each copy's nodes standardised per channel, then a learned
scale and shift, as GraphNorm / GIN's BatchNorm centre away what all nodes share), layer
(LayerNorm per node) or none; the node readout is ``readout`` = mean (default) or sum (the
paper's). Why (issue 16's CSL smoke run reached 0.17 test accuracy): every CSL graph is
vertex-transitive and 4-regular, so the classes differ only in what the mark adds, while the sum
aggregation grows the shared part about 5× per layer. At initialisation on a CSL batch
(6 layers, hidden 64) the smallest distance between two classes' logits relative to the logit
scale is 2e-4 with norm=none, readout=sum (logits ~900, loss 1.2e3), 2e-4 with LayerNorm and 0.14
with norm=graph, readout=mean (logits ~0.3).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import graph_patches as B
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import MODELS

PREFIX = "klg"


def tuples(n: int, k: int, num_tuples: int, seed: int) -> np.ndarray:
    """The ordered k-tuples of distinct nodes [T, k]: all of them, or ``num_tuples`` sampled."""
    if k == 1:
        all_ = np.arange(n)[:, None]
    else:
        u, v = np.nonzero(~np.eye(n, dtype=bool))
        all_ = np.stack([u, v], 1)
    if len(all_) <= num_tuples:
        return all_
    rng = np.random.default_rng(seed)
    return all_[np.sort(rng.choice(len(all_), num_tuples, replace=False))]


def tuple_bag(senders, receivers, n: int, k: int, num_tuples: int, seed: int):
    """One graph's marked copies as a :class:`graph_patches.LocalBag`: copy t is the whole graph
    with tuple t's i-th node marked i (1-based)."""
    ts = tuples(n, k, num_tuples, seed)
    marks = []
    for t in ts:
        m = np.zeros(n, np.int64)
        m[t] = np.arange(1, k + 1)
        marks.append(m)
    return B.induced_copies(senders, receivers, n, [np.arange(n)] * len(ts), marks)


class CopyNorm(nn.Module):
    """Per-copy, per-channel standardisation over the copy's real nodes, then scale and shift
    (GraphNorm's centring, Cai et al. 2021, without its learned mean fraction)."""

    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, bag, h, num_subs: int):
        w = bag["cmask"].astype(h.dtype)
        mean = G.segment_mean(h, bag["sub"], num_subs, weights=w)[bag["sub"]]
        var = G.segment_mean(jnp.square(h - mean), bag["sub"], num_subs, weights=w)[bag["sub"]]
        f = h.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (f,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (f,), self.param_dtype)
        y = (h - mean) * jax.lax.rsqrt(var + self.epsilon)
        return y * scale.astype(h.dtype) + bias.astype(h.dtype)


@MODELS.register("klgnn")
class KLGNN(nn.Module):
    """k,l-GNN graph classifier with l = 1 (see the module docstring)."""

    TASK = "graph"
    CHOICES = {"readout": ("mean", "sum"), "norm": ("graph", "layer", "none")}
    hidden: int = 64
    num_classes: int = 2
    k: int = 1
    num_layers: int = 3
    num_tuples: int = 64
    seed: int = 0
    dropout: float = 0.0
    norm: str = "graph"
    readout: str = "mean"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.k not in (1, 2) or self.num_tuples < 1 or self.num_layers < 1:
            raise UserError(
                f"model.k={self.k}, num_tuples={self.num_tuples}, num_layers={self.num_layers}: "
                "k must be 1 or 2, num_tuples and num_layers >= 1"
            )
        super().__post_init__()

    def prepare_graph(self, graph):
        """The numpy batch with its marked copies in ``graph.norm`` (prefix ``klg``)."""
        args = (self.k, self.num_tuples, self.seed)
        bags = [B.cached(tuple_bag, args, s, r, n) for _, n, s, r, _ in B.split_graphs(graph)]
        t = self.num_tuples
        return B.pack(
            graph, PREFIX, bags, t, t * graph.num_nodes, t * graph.num_edges, "model.num_tuples"
        )

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bag = B.get(graph, PREFIX, "KLGNN")
        d, s = self.hidden, graph.num_graphs * self.num_tuples
        h = L.dense(d, True, "encoder", **kw)(x)[bag["node"]]
        mark = nn.Embed(self.k + 1, d, name="mark", **kw)(bag["mark"])
        h = h + mark.astype(h.dtype)
        for i in range(self.num_layers):
            h = B.CopyGIN(d, name=f"gin{i}", **kw)(bag, h)
            if self.norm == "graph":
                h = CopyNorm(name=f"norm{i}", **kw)(bag, h, s)
            elif self.norm == "layer":
                h = nn.LayerNorm(epsilon=1e-5, name=f"norm{i}", **kw)(h)
            h = nn.relu(h)
        z = B.sub_pool(bag, h, s, self.readout)  # one row per marked copy
        out = G.segment_mean(
            z, bag["sgraph"], graph.num_graphs, weights=bag["smask"].astype(z.dtype)
        )
        out = L.Dropout(self.dropout)(out, deterministic=not train)
        head = L.MLP((d, self.num_classes), name="head", **kw)
        return head(out) * graph.graph_mask[:, None].astype(out.dtype)


__all__ = ["KLGNN", "tuple_bag", "tuples"]

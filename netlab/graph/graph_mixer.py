"""Graph ViT and Graph MLP-Mixer: He, Hooi, Laurent, Perold, LeCun & Bresson, "A Generalization of
ViT/MLP-Mixer to Graphs" (ICML 2023).

Pipeline (paper §3-4), per graph:

1. Patches. The paper partitions with METIS into P parts, then adds the 1-hop neighbourhood of
   every part (overlapping patches; patch edges = the graph's edges inside a patch). METIS is not a
   dependency here: :func:`spectral_partition` is recursive spectral bisection (split a part by
   its Fiedler vector of the induced Laplacian, ties by node id, sizes in proportion to the patch
   counts of the two halves) -- deterministic numpy/scipy, balanced, and like METIS it cuts few
   edges on meshes and rings. A graph with fewer than P nodes gets one-node patches and empty
   ones (the authors draw random one-node patches). ``overlap`` hops of expansion (paper: 1).
2. Node positional encoding RWSE_k(v) = ((D⁻¹A)^k)_vv, k = 1..``rw_steps``, added through a
   linear map.
3. Patch encoder: ``gnn_layers`` GIN layers on the union of patches (a node in several patches has
   a copy in each); before layer i > 0 every copy adds a linear map of its patch's mean, and after
   each layer the copies of a node are averaged (the authors' code). Token = mean of a patch.
4. Patch positional encoding: A_P = M Mᵀ (M the [P, n] patch membership: shared-node counts,
   diagonal = patch sizes); the random-walk diagonals of A_P (``rw_steps``) through a linear map.
5. ``mixer_layers`` blocks over the P tokens. Graph MLP-Mixer: x += TokenMLP(LN x) (across
   patches), x += ChannelMLP(LN x), GELU. Graph ViT: x += (A_P ⊙ softmax(QKᵀ/√d_h)) V (the
   paper's Hadamard attention bias; empty patches masked), x += MLP(LN x). Final LayerNorm.
6. Readout: mean over non-empty patches, two-layer MLP head.

Patches are extracted once per graph on the host (:meth:`GraphMixer.prepare_graph`, called by the
graph task on each padded batch; per-graph results are cached) and packed with
:mod:`netlab.graph.graph_patches`; copies per batch <= ``copy_factor`` × padded nodes and copy edges
<= ``copy_factor`` × padded edges (a batch that needs more is a one-line error naming that knob).

Deliberate differences: spectral bisection instead of METIS (above); patches are fixed per graph
rather than re-drawn every epoch with 30 % edge dropping (a data augmentation); the token MLP
masks empty patches (the authors' does not). The model is invariant to node relabelling given the
partition carried along; the partition itself follows the node order only on ties (the token MLP
reads patches in order, as in the paper).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import graph_patches as B
from netlab.graph import layers as L
from netlab.graph.padding import round_up
from netlab.graph.registries import MODELS

PREFIX = "gmx"


def spectral_partition(senders, receivers, n: int, parts: int) -> np.ndarray:
    """Part labels [n] in 0..parts-1 by recursive spectral bisection (see the module docstring)."""
    labels = np.zeros(n, np.int64)
    a = np.zeros((n, n))
    a[np.asarray(receivers), np.asarray(senders)] = 1.0
    a = np.maximum(a, a.T)

    def split(nodes, k, base):
        if len(nodes) <= k:  # one node per patch, the remaining patches empty
            labels[nodes] = base + np.arange(len(nodes))
            return
        if k == 1:
            labels[nodes] = base
            return
        sub = a[np.ix_(nodes, nodes)]
        lap = np.diag(sub.sum(1)) - sub
        fiedler = np.linalg.eigh(lap)[1][:, 1]
        fiedler = np.round(fiedler, 10)
        order = np.lexsort((nodes, fiedler))
        k1 = k // 2
        n1 = int(round(len(nodes) * k1 / k))
        split(nodes[order[:n1]], k1, base)
        split(nodes[order[n1:]], k - k1, base + k1)

    split(np.arange(n), int(parts), 0)
    return labels


def rwse(adj: np.ndarray, steps: int) -> np.ndarray:
    """Random-walk return probabilities diag((D⁻¹A)^k), k = 1..steps -> [n, steps]."""
    deg = adj.sum(1, keepdims=True)
    t = np.where(deg > 0, adj / np.where(deg > 0, deg, 1.0), 0.0)
    out, p = [], np.eye(len(adj))
    for _ in range(steps):
        p = p @ t
        out.append(np.diag(p).copy())
    return np.stack(out, 1) if out else np.zeros((len(adj), 0))


def patch_bag(senders, receivers, n: int, parts: int, overlap: int, steps: int, labels=None):
    """One graph's patches as a :class:`graph_patches.LocalBag`: ``parts`` patch slots (labels from
    :func:`spectral_partition` unless given), expanded by ``overlap`` hops; node RWSE, patch RWSE
    and the patch adjacency A_P = M Mᵀ as extras."""
    labels = spectral_partition(senders, receivers, n, parts) if labels is None else labels
    a = np.zeros((n, n))
    a[np.asarray(receivers), np.asarray(senders)] = 1.0
    member = np.zeros((parts, n))
    member[np.asarray(labels), np.arange(n)] = 1.0
    for _ in range(int(overlap)):
        member = np.minimum(member + member @ a.T, 1.0)
    members = [np.nonzero(row)[0] for row in member]
    bag = B.induced_copies(senders, receivers, n, members)
    ap = member @ member.T
    bag.node_extra["rwse"] = rwse(a, steps).astype(np.float32)
    bag.sub_extra["pe"] = rwse(ap, steps).astype(np.float32)
    bag.sub_extra["adj"] = ap.astype(np.float32)
    return bag


def _patch_bag_cached(s, r, n, parts, overlap, steps):
    return patch_bag(s, r, n, parts, overlap, steps)


@MODELS.register("graph_mixer")
class GraphMixer(nn.Module):
    """Graph MLP-Mixer graph classifier (see the module docstring); ``num_patches`` = P."""

    TASK = "graph"
    hidden: int = 64
    num_classes: int = 2
    num_patches: int = 8
    overlap: int = 1
    gnn_layers: int = 2
    mixer_layers: int = 2
    rw_steps: int = 8
    copy_factor: int = 4
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        bad = self.num_patches < 1 or self.overlap < 0 or self.copy_factor < 1
        if bad or self.gnn_layers < 1 or self.rw_steps < 1:
            raise UserError(
                f"model.num_patches={self.num_patches}, overlap={self.overlap}, "
                f"copy_factor={self.copy_factor}, gnn_layers={self.gnn_layers}, "
                f"rw_steps={self.rw_steps}: need num_patches, copy_factor, gnn_layers, rw_steps "
                ">= 1 and overlap >= 0"
            )
        super().__post_init__()

    def prepare_graph(self, graph, partitions=None):
        """The numpy batch with its patches in ``graph.norm`` (prefix ``gmx``); ``partitions``
        (one label array per real graph) replaces the spectral partition (tests)."""
        parts, args = B.split_graphs(graph), (self.num_patches, self.overlap, self.rw_steps)
        if partitions is None:
            bags = [B.cached(_patch_bag_cached, args, s, r, n) for _, n, s, r, _ in parts]
        else:
            bags = [
                patch_bag(s, r, n, *args, labels=lab)
                for (_, n, s, r, _), lab in zip(parts, partitions)
            ]
        f = self.copy_factor
        return B.pack(
            graph,
            PREFIX,
            bags,
            self.num_patches,
            f * graph.num_nodes,
            round_up(f * graph.num_edges, 8),
            "model.copy_factor",
        )

    def mix(self, tokens, mask, adj, kw):
        """The mixer blocks over tokens [G, P, d] (``mask`` [G, P] non-empty patches)."""
        p, d = tokens.shape[1], self.hidden
        m = mask[..., None].astype(tokens.dtype)
        for i in range(self.mixer_layers):
            y = nn.LayerNorm(name=f"ln_tok{i}", **kw)(tokens) * m
            y = jnp.swapaxes(y, 1, 2)  # [G, d, P]: mix across patches
            y = L.dense(4 * p, True, f"tok{i}_0", **kw)(y)
            y = L.dense(p, True, f"tok{i}_1", **kw)(nn.gelu(y))
            tokens = tokens + jnp.swapaxes(y, 1, 2) * m
            y = nn.LayerNorm(name=f"ln_ch{i}", **kw)(tokens)
            y = L.dense(max(d // 2, 1), True, f"ch{i}_0", **kw)(y)
            tokens = tokens + L.dense(d, True, f"ch{i}_1", **kw)(nn.gelu(y)) * m
        return tokens

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bag = B.get(graph, PREFIX, type(self).__name__)
        n_graph, p, d = graph.num_graphs, self.num_patches, self.hidden
        s = n_graph * p
        h = L.dense(d, True, "encoder", **kw)(x)
        h = h + L.dense(d, False, "node_pe", **kw)(graph.norm[f"{PREFIX}_rwse"].astype(h.dtype))
        hc = h[bag["node"]]
        patch = B.sub_pool(bag, hc, s)
        for i in range(self.gnn_layers):
            if i > 0:
                hc = hc + L.dense(d, True, f"patch_up{i}", **kw)(patch)[bag["sub"]]
            hc = nn.relu(B.CopyGIN(d, name=f"gnn{i}", **kw)(bag, hc))
            hc = B.node_pool(bag, hc, graph.num_nodes)[bag["node"]]  # average a node's copies
            patch = B.sub_pool(bag, hc, s)
        pe = graph.norm[f"{PREFIX}_pe"].astype(h.dtype)
        tokens = patch + L.dense(d, True, "patch_pe", **kw)(pe)
        tokens = tokens.reshape(n_graph, p, d)
        mask = bag["smask"].reshape(n_graph, p)  # non-empty patches
        adj = graph.norm[f"{PREFIX}_adj"].astype(h.dtype).reshape(n_graph, p, p)
        tokens = nn.LayerNorm(name="ln_out", **kw)(self.mix(tokens, mask, adj, kw))
        out = B.masked_mean(tokens, mask, 1)
        out = L.Dropout(self.dropout)(out, deterministic=not train)
        head = L.MLP((d, self.num_classes), name="head", **kw)
        return head(out) * graph.graph_mask[:, None].astype(out.dtype)


@MODELS.register("graph_vit")
class GraphViT(GraphMixer):
    """Graph ViT: the mixer blocks are multi-head self-attention over patches with the patch
    adjacency A_P as a Hadamard bias on the attention weights (paper eq. 8), then an MLP."""

    heads: int = 4

    def mix(self, tokens, mask, adj, kw):
        d, h = self.hidden, self.heads
        if d % h:
            raise UserError(f"model.hidden={d} must be a multiple of model.heads={h}")
        g, p = tokens.shape[:2]
        m = mask[..., None].astype(tokens.dtype)
        for i in range(self.mixer_layers):
            y = nn.LayerNorm(name=f"ln_att{i}", **kw)(tokens)
            q, k, v = jnp.split(L.dense(3 * d, True, f"qkv{i}", **kw)(y), 3, -1)
            q, k, v = (t.reshape(g, p, h, d // h) for t in (q, k, v))
            logits = jnp.einsum("gphc,gqhc->ghpq", q, k) / jnp.sqrt(jnp.asarray(d // h, q.dtype))
            logits = jnp.where(mask[:, None, None, :], logits, jnp.asarray(-1e9, q.dtype))
            att = nn.softmax(logits, -1) * adj[:, None]  # (A_P ⊙ softmax(QKᵀ/√d_h))
            y = jnp.einsum("ghpq,gqhc->gphc", att, v).reshape(g, p, d)
            tokens = tokens + L.dense(d, True, f"att_out{i}", **kw)(y) * m
            y = nn.LayerNorm(name=f"ln_mlp{i}", **kw)(tokens)
            y = L.dense(2 * d, True, f"mlp{i}_0", **kw)(y)
            tokens = tokens + L.dense(d, True, f"mlp{i}_1", **kw)(nn.gelu(y)) * m
        return tokens


__all__ = ["GraphMixer", "GraphViT", "patch_bag", "rwse", "spectral_partition"]

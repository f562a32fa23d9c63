"""NCN, neural common neighbours: Wang, Yang & Zhang, "Neural Common Neighbor with Completion for
Link Prediction" (ICLR 2024), without the completion step (NCNC).

With node representations h = MPNN(A, X), a pair (i, j) is scored from the two end nodes and the
sum over their common neighbours (the paper's NCN, §4):

    NCN(i, j) = MLP( h_i ⊙ h_j ‖ Σ_{k ∈ N(i) ∩ N(j)} h_k ).

``common_neighbours=False`` drops the second part: MLP(h_i ⊙ h_j), the usual GAE-style Hadamard
link predictor on the same MPNN (the baseline NCN is compared with).

Common neighbours come from dense adjacency rows: Σ_{k ∈ CN(i,j)} h_k = (A_i ⊙ A_j) h, one
[P, N] product per batch of P pairs, built inside jit from the padded edge list (A binarised,
padding edges and self-pairs excluded); memory O(N² + P·N), meant for Planetoid-sized graphs.
With ``cn_triples`` (host-built by :func:`common_neighbour_triples`) the same sums are a segment
sum over the (pair, common neighbour) triples instead, O(P·deg) work.

Defaults (``encoder="gcn"``, ``predictor="concat"``): netlab's GCN (``num_layers`` GCNConv
layers, dropout, ReLU between) and the paper's concatenation MLP. The options below are the
authors' code (GraphPKU/NeuralCommonNeighbor, ``model.py``; its Cora command uses all of them):

- ``encoder="puregcn"``: a linear map of the raw features to ``hidden``, then ``num_layers``
  parameter-free propagations D̃^-1/2 Ã D̃^-1/2 (the code's ``PureConv(aggr="gcn")``, no
  per-layer weights); ``out`` must equal ``hidden``. ``dropout`` acts after the input map.
- ``jk`` (puregcn only): jumping knowledge, h = Σ_l w_l h^(l) over the layer outputs with
  learned scalars w (standard-normal init, as the code's ``jkparams``).
- ``input_dropout`` (the code's ``xdp``): dropout on the raw features; ``tail_dropout``
  (``tdp``): dropout on the last layer's output.
- ``predictor="branch"`` (the code's ``CNLinkPredictor``, ``cn1``; ``cn0`` without common
  neighbours): s = lin(β · f_cn(Σ_CN h_k) + f_ij(h_i ⊙ h_j)) with a learned scalar β (init 1),
  f_cn = Dense-ReLU-Dense-[LN]-ReLU-[Dense], f_ij = Dense-[LN]-ReLU-[Dense], lin =
  Dense-[LN]-ReLU-Dense(1), all ``predictor_hidden`` wide, dropout ``predictor_dropout`` before
  each ReLU. ``predictor_ln`` (``lnnn``) adds the [LN]s, ``tailact`` (``tailact``) drops the
  bracketed final Dense of f_cn and f_ij, ``use_xlin`` (``use_xlin``) sums h + xlin(h) over the
  common neighbours instead of h, xlin = Dense-ReLU-Dense-[LN]-ReLU (``predictor_hidden`` must
  equal the encoder width).
- ``cn_edge_dropout`` (``preedp``): in training, each directed edge of the common-neighbour
  adjacency is dropped with this probability (the message-passing graph keeps it); the counts
  stay binary, as in the code (its rescaled values are refilled with 1 by ``adjoverlap``).

Not carried over: the code's ``ln`` (LayerNorm in the MPNN) acts only on its weighted convolutions,
not on ``puregcn``, and ``gnnedp`` (MPNN edge dropout) is 0 for Cora; ``pt``, ``alpha``,
``probscale`` and ``proboffset`` are NCNC's completion parameters. Separate learning rates for the
MPNN and the predictor (``gnnlr`` / ``prelr``) are an optimiser matter: the MPNN's parameters are
the ``mpnn`` subtree (``bench/graph_wave2_reproduce.py`` uses ``optax.multi_transform``).
With all of them and the authors' protocol (``bench/graph_wave2_reproduce.py --authors``), Cora
test HR@100 is 88.41 ± 1.48 over 10 seeds against the paper's 89.05 ± 0.96.
Deliberate difference: the default ``concat`` predictor is the paper's concatenation; the
full-batch ``graph.link_prediction`` task has no target-link removal (the bench script does).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from netlab.errors import UserError
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.gcn import GCN
from netlab.graph.registries import MODELS
from netlab.registry import check_choice, check_range

ENCODERS = ("gcn", "puregcn")
PREDICTORS = ("concat", "branch")


def adjacency(graph, dtype=jnp.float32, keep=None):
    """Dense binary A [N, N] (A[i, j] = 1 iff an edge j -> i) of a padded graph; padding edges
    and self-loops excluded, and edges where ``keep`` [E] (optional) is False."""
    n = graph.num_nodes
    m = graph.edge_mask & (graph.senders != graph.receivers)
    if keep is not None:
        m = m & keep
    return jnp.zeros((n, n), dtype).at[graph.receivers, graph.senders].max(m.astype(dtype))


def common_neighbour_rows(graph, pairs, dtype=jnp.float32, keep=None):
    """[P, N] indicator rows of N(i) ∩ N(j) for ``pairs`` [P, 2] (row sums: the CN counts)."""
    a = adjacency(graph, dtype, keep)
    return a[pairs[:, 0]] * a[pairs[:, 1]]


def common_neighbour_triples(graph, pairs, size: int | None = None):
    """Host-side sparse form of :func:`common_neighbour_rows` for a host ``graph`` (numpy leaves):
    every (pair p, common neighbour k) with the slots e_i, e_j of the directed edges k -> i and
    k -> j, as int32 arrays ``(p, k, e_i, e_j)`` padded to ``size`` (None: no padding) with
    p = len(pairs) (dropped by the segment sum). The model masks each triple by
    ``edge_mask[e_i] & edge_mask[e_j]``, so removing edges later (target-link removal, edge
    dropout) needs no new triples. Cost O(P·deg) instead of the dense O(P·N·F) product."""
    s, r = np.asarray(graph.senders), np.asarray(graph.receivers)
    ok = np.asarray(graph.edge_mask) & (s != r)
    n, slot = int(graph.num_nodes), np.nonzero(ok)[0]
    e = sp.csr_matrix((slot + 1, (r[ok], s[ok])), shape=(n, n))
    e.sum_duplicates()
    if e.nnz != len(slot):
        raise UserError("common_neighbour_triples: the graph has duplicate edges; deduplicate it")
    pairs = np.asarray(pairs)
    ai, aj = e[pairs[:, 0]], e[pairs[:, 1]]
    both = (ai > 0).multiply(aj > 0).tocoo()
    m = both.nnz
    size = m if size is None else size
    if m > size:
        raise UserError(f"{m} common-neighbour triples exceed size={size}; raise the size")
    out = np.zeros((4, size), np.int32)
    out[0] = len(pairs)
    out[:, :m] = [
        both.row,
        both.col,
        np.asarray(ai[both.row, both.col]).ravel() - 1,
        np.asarray(aj[both.row, both.col]).ravel() - 1,
    ]
    return tuple(out)


class PureGCN(nn.Module):
    """The ``puregcn`` encoder: Dense(hidden) → dropout → ``num_layers`` weightless
    propagations D̃^-1/2 Ã D̃^-1/2 → tail dropout, with optional learned JK sum."""

    hidden: int
    num_layers: int
    dropout: float = 0.0
    tail_dropout: float = 0.0
    jk: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        x = L.dense(self.hidden, True, "input", self.dtype, self.param_dtype)(x)
        x = L.Dropout(self.dropout)(x, deterministic=not train)
        outs = []
        for _ in range(self.num_layers):
            x = G.normalized_adjacency_matmul(graph, x)
            outs.append(x)
        outs[-1] = L.Dropout(self.tail_dropout)(outs[-1], deterministic=not train)
        if not self.jk:
            return outs[-1]
        w = self.param("jk", nn.initializers.normal(1.0), (self.num_layers,), self.param_dtype)
        return jnp.einsum("l,lnf->nf", w.astype(outs[-1].dtype), jnp.stack(outs))


class BranchPredictor(nn.Module):
    """The authors' ``CNLinkPredictor`` head (see the module docstring) on node representations
    ``h`` [N, F], ``pairs`` [P, 2] and ``cn_sum`` (v [N, F] -> Σ_CN v_k [P, F]; None: no CN
    branch)."""

    hidden: int
    dropout: float = 0.0
    ln: bool = False
    tailact: bool = False
    use_xlin: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def block(self, x, layout, name, train):
        """Apply ``layout``: 'D' Dense, 'N' LayerNorm (when ``ln``), 'R' dropout + ReLU."""
        for i, op in enumerate(layout):
            if op == "D":
                x = L.dense(self.hidden, True, f"{name}_{i}", self.dtype, self.param_dtype)(x)
            elif op == "N" and self.ln:
                x = nn.LayerNorm(
                    1e-5, dtype=self.dtype, param_dtype=self.param_dtype, name=f"{name}_{i}"
                )(x)
            elif op == "R":
                x = nn.relu(L.Dropout(self.dropout)(x, deterministic=not train))
        return x

    @nn.compact
    def __call__(self, h, pairs, cn_sum, train: bool = False):
        tail = "" if self.tailact else "D"
        z = self.block(h[pairs[:, 0]] * h[pairs[:, 1]], "DNR" + tail, "xij", train)
        if cn_sum is not None:
            cn = cn_sum(h + self.block(h, "DRDNR", "xlin", train) if self.use_xlin else h)
            beta = self.param("beta", nn.initializers.ones, (1,), self.param_dtype)
            z = z + beta.astype(z.dtype) * self.block(cn, "DRDNR" + tail, "xcn", train)
        z = self.block(z, "DNR", "lin", train)
        return L.dense(1, True, "out", self.dtype, self.param_dtype)(z)[:, 0]


@MODELS.register("ncn")
class NCN(nn.Module):
    """NCN link scorer: encoder (``hidden`` → ``out``) → predictor on (h_i ⊙ h_j, Σ_CN h_k) →
    logit. Call with ``pairs`` [P, 2] of node indices; returns [P] logits."""

    TASK = "link"
    hidden: int = 64
    out: int = 64
    num_layers: int = 2
    dropout: float = 0.0
    predictor_hidden: int = 64
    common_neighbours: bool = True
    encoder: str = "gcn"
    jk: bool = False
    input_dropout: float = 0.0
    tail_dropout: float = 0.0
    predictor: str = "concat"
    predictor_dropout: float = 0.0
    predictor_ln: bool = False
    tailact: bool = False
    use_xlin: bool = False
    cn_edge_dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    remat_policy: Any = None

    def check(self):
        check_choice("model.encoder", self.encoder, ENCODERS)
        check_choice("model.predictor", self.predictor, PREDICTORS)
        for k in ("dropout", "input_dropout", "tail_dropout", "predictor_dropout"):
            check_range(f"model.{k}", getattr(self, k), 0.0, 1.0)
        check_range("model.cn_edge_dropout", self.cn_edge_dropout, 0.0, 1.0)
        fix = "set them equal or use the defaults"
        if self.encoder == "puregcn" and self.out != self.hidden:
            raise UserError(f"model.out={self.out} with encoder=puregcn needs out=hidden; {fix}")
        if self.jk and self.encoder != "puregcn":
            raise UserError("model.jk=True needs model.encoder=puregcn; set jk=False or puregcn")
        if self.use_xlin and (self.predictor != "branch" or self.predictor_hidden != self.out):
            raise UserError(
                "model.use_xlin=True needs predictor=branch and predictor_hidden=out; " + fix
            )

    @nn.compact
    def __call__(self, graph, x, pairs, train: bool = False, cn_triples=None):
        """[P] logits; ``cn_triples`` (optional, from :func:`common_neighbour_triples` on the
        same graph): the common-neighbour sums by a segment sum instead of dense rows."""
        self.check()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = L.Dropout(self.input_dropout)(x, deterministic=not train)
        if self.encoder == "puregcn":
            enc = PureGCN(
                self.hidden,
                self.num_layers,
                self.dropout,
                self.tail_dropout,
                self.jk,
                name="mpnn",
                **kw,
            )
            h = enc(graph, x, train)
        else:
            enc = GCN(
                self.hidden,
                self.out,
                self.num_layers,
                self.dropout,
                remat_policy=self.remat_policy,
                name="mpnn",
                **kw,
            )
            h = L.Dropout(self.tail_dropout)(enc(graph, x, train), deterministic=not train)
        cn_sum = None
        if self.common_neighbours:
            keep = None
            if train and self.cn_edge_dropout > 0.0:
                p_keep = 1.0 - self.cn_edge_dropout
                keep = jax.random.bernoulli(self.make_rng("dropout"), p_keep, graph.edge_mask.shape)
            if cn_triples is None:
                rows = common_neighbour_rows(graph, pairs, h.dtype, keep)
                cn_sum = lambda v: rows @ v  # noqa: E731
            else:
                p, k, ei, ej = cn_triples
                ok = graph.edge_mask if keep is None else graph.edge_mask & keep
                w = (ok[ei] & ok[ej]).astype(h.dtype)[:, None]
                cn_sum = lambda v: G.segment_sum(v[k] * w, p, pairs.shape[0])  # noqa: E731
        if self.predictor == "branch":
            return BranchPredictor(
                self.predictor_hidden,
                self.predictor_dropout,
                self.predictor_ln,
                self.tailact,
                self.use_xlin,
                name="predictor",
                **kw,
            )(h, pairs, cn_sum, train)
        feats = h[pairs[:, 0]] * h[pairs[:, 1]]
        if cn_sum is not None:
            feats = jnp.concatenate([feats, cn_sum(h)], -1)
        return L.MLP((self.predictor_hidden, 1), name="predictor", **kw)(feats)[:, 0]


__all__ = [
    "ENCODERS",
    "NCN",
    "PREDICTORS",
    "BranchPredictor",
    "PureGCN",
    "adjacency",
    "common_neighbour_rows",
    "common_neighbour_triples",
]

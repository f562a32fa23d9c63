"""DIGRAC: digraph clustering by flow imbalance (He, Reinert, Wang & Cucuringu, LoG 2022,
arXiv 2106.05194).

Directed graph with adjacency A (A_ij = weight of edge i -> j), K clusters.

DIMPA, Directed Mixed Path Aggregation (§3.2): with Ã = A + τ I and the row-normalised source /
target operators  A_s = D_s^{-1} Ã,  A_t = D_t^{-1} Ã^T  (D_s, D_t the row sums), and two MLPs,
    Z_s = Σ_{h=0..H} ω^s_h A_s^h MLP_s(X),   Z_t = Σ_{h=0..H} ω^t_h A_t^h MLP_t(X),
    Z = [Z_s || Z_t],
with learnable hop weights ω (initialised to 1). Cluster probabilities P = softmax(Z W) (a linear
prototype layer, eq. 3).

Probabilistic flow imbalance (§3.3, eqs. 4-7). The soft cut
W(k, l) = Σ_ij P_ik A_ij P_jl = (P^T A P)_kl and the soft volume V(k) = Σ_i P_ik (d_i^in + d_i^out).
The imbalance between clusters k and l is
    CI^plain(k, l)   = |W(k,l) - W(l,k)| / (W(k,l) + W(l,k)),
    CI^vol_sum(k, l) = 2 |W(k,l) - W(l,k)| / (V(k) + V(l)),
    CI^vol_min(k, l) = |W(k,l) - W(l,k)| / min(V(k), V(l)),   CI^vol_max: with max,
(the factor 2 in vol_sum and the min/max variants keep every CI in [0, 1]; our normalisation
convention), and the loss is  L = 1 - (1/β) Σ_{top-β pairs k<l} CI(k, l), β = number of pairs that
carry a planted flow (e.g. K - 1 for a path meta-graph).

Input features (§5.1, following Cucuringu et al.'s Hermitian clustering): the real and imaginary
parts of the eigenvectors of the K largest eigenvalues of the Hermitian H = i (A - A^T)
(`hermitian_features`, host numpy). Evaluation: the adjusted Rand index (Hubert & Arabie 1985)
between argmax_k P_ik and the planted clusters (`adjusted_rand_index`).

`DIGRAC` is the model (`registries.MODELS["digrac"]`); `DIMPAConv` is DIMPA as a layer on one
directed graph (`registries.LAYERS["dimpa"]`), building both operators inside jit.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import graphs as G
from netlab.graph import padding
from netlab.graph.registries import LAYERS, MODELS
from netlab.registry import check_choice
from netlab.sharding import axes

NORMALISATIONS = ("plain", "vol_sum", "vol_min", "vol_max")


# --------------------------------------------------------------------------------------------------
# Host-side preparation
def dimpa_graphs(senders, receivers, num_nodes: int, tau: float = 0.5, dtype=np.float32):
    """The two random-walk operators of DIMPA as netlab Graphs (self term in `norm`).

    `source` aggregates at i over its out-edges i -> j (A_s = D_s^{-1}(A + τI)); `target` aggregates
    at j over its in-edges i -> j (A_t = D_t^{-1}(A^T + τI)). Edge weights hold the raw A_ij (1),
    `norm["rw_edge"]` / `norm["rw_self"]` the normalised coefficients (in `dtype`)."""
    s, r = np.asarray(senders), np.asarray(receivers)
    out = []
    for snd, rcv in ((r, s), (s, r)):  # source operator: messages flow j -> i along i -> j
        g = padding.from_edges(snd, rcv, num_nodes, norms=False, dtype=dtype)
        m = np.asarray(g.edge_mask)
        deg = np.bincount(np.asarray(g.receivers)[m], minlength=g.num_nodes).astype(dtype) + tau
        coef = np.where(m, 1.0 / deg[np.asarray(g.receivers)], 0.0).astype(dtype)
        self_coef = np.where(np.asarray(g.node_mask), tau / deg, 0.0).astype(dtype)
        out.append(g.replace(norm={"rw_edge": coef, "rw_self": self_coef}))
    return {"source": out[0], "target": out[1]}


def dimpa_operators(graph: G.Graph, tau: float = 0.5, dtype=None):
    """`dimpa_graphs` inside jit, from one directed Graph whose edge s -> r means A_sr = 1:
    returns (source, target) Graphs with `rw_edge` / `rw_self` norms in `dtype` (default: the edge
    weights' precision, float32 at least). The source operator runs its messages against the edge
    direction, so its receivers are unsorted (no sortedness hint)."""

    def operator(g):
        deg = G.degree(g, weighted=False, dtype=dtype) + tau
        m = g.edge_mask
        coef = jnp.where(m, 1.0 / deg[g.receivers], 0.0)
        self_coef = jnp.where(g.node_mask, tau / deg, 0.0)
        return g.replace(norm={"rw_edge": coef, "rw_self": self_coef})

    reverse = graph.replace(
        senders=graph.receivers, receivers=graph.senders, sorted_receivers=False
    )
    return operator(reverse), operator(graph)


def hermitian_features(senders, receivers, num_nodes: int, k: int, dtype=np.float32) -> np.ndarray:
    """[n, 2k] in `dtype`: real and imaginary parts of the top-k eigenvectors of H = i(A - A^T)
    (computed in float64)."""
    A = np.zeros((num_nodes, num_nodes))
    np.add.at(A, (np.asarray(senders), np.asarray(receivers)), 1.0)
    H = 1j * (A - A.T)
    w, U = np.linalg.eigh(H)
    top = U[:, np.argsort(-w)[:k]]
    x = np.concatenate([top.real, top.imag], 1) * np.sqrt(num_nodes)
    return x.astype(dtype)


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """ARI from the contingency table: (Σ C(n_ij,2) - E) / (½(Σ C(a_i,2) + Σ C(b_j,2)) - E)."""
    a = np.unique(np.asarray(labels_true), return_inverse=True)[1]
    b = np.unique(np.asarray(labels_pred), return_inverse=True)[1]
    n = len(a)
    table = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(table, (a, b), 1)
    comb = lambda v: v * (v - 1) / 2.0  # noqa: E731
    index = comb(table).sum()
    sa, sb = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    expected = sa * sb / comb(n) if n > 1 else 0.0
    top = 0.5 * (sa + sb)
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


# --------------------------------------------------------------------------------------------------
# Loss
def flow_imbalance(P, AP, degree, normalisation: str = "vol_sum", eps: float = 1e-8):
    """The K x K matrix CI(k, l) from soft assignments P [n, K], AP = A @ P [n, K] and the total
    (in + out) degree [n]. Padding rows of P must be zero."""
    W = P.T @ AP  # W[k, l] = Σ_ij P_ik A_ij P_jl
    diff = jnp.abs(W - W.T)
    check_choice("loss.normalisation", normalisation, NORMALISATIONS)
    if normalisation == "plain":
        return diff / (W + W.T + eps)
    V = P.T @ degree  # [K]
    if normalisation == "vol_sum":
        return 2.0 * diff / (V[:, None] + V[None, :] + eps)
    if normalisation == "vol_min":
        return diff / (jnp.minimum(V[:, None], V[None, :]) + eps)
    check_choice("loss.normalisation", normalisation, NORMALISATIONS)
    return diff / (jnp.maximum(V[:, None], V[None, :]) + eps)


def imbalance_loss(P, AP, degree, beta: int, normalisation: str = "vol_sum"):
    """1 - mean of the β largest CI(k, l) over pairs k < l."""
    K = P.shape[1]
    ci = flow_imbalance(P, AP, degree, normalisation)
    iu = np.triu_indices(K, 1)
    top, _ = jax.lax.top_k(ci[iu], int(beta))
    return 1.0 - top.mean()


def adjacency_matmul(source: G.Graph, P):
    """A @ P with the raw edge weights (aggregates over out-edges, through the message-passing
    core)."""
    return G.propagate(source, G.gather(source, P), source.edge_weight)


def total_degree(source: G.Graph):
    """d_in + d_out for every node of the `source` graph (edges counted once per direction)."""
    out_deg = G.degree(source)  # source receivers = original senders
    in_deg = jax.ops.segment_sum(source.edge_weight, source.senders, num_segments=source.num_nodes)
    return out_deg + in_deg


# --------------------------------------------------------------------------------------------------
# Model
def _rw(graph: G.Graph, x):
    out = G.propagate(graph, G.gather(graph, x), graph.norm["rw_edge"])
    return out + graph.norm["rw_self"][:, None].astype(x.dtype) * x


class DIMPA(nn.Module):
    """Directed mixed path aggregation (§3.2): returns Z = [Z_s || Z_t] [n, 2 * hidden]."""

    hidden: int = 32
    hops: int = 2
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, source: G.Graph, target: G.Graph, x, train: bool = False):
        dense = lambda name, names: nn.Dense(  # noqa: E731
            self.hidden,
            name=name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
        )
        zs = []
        for name, graph in (("s", source), ("t", target)):
            h = dense(f"mlp_{name}_0", (None, axes.EMBED))(x)
            h = nn.relu(h)
            h = nn.Dropout(self.dropout)(h, deterministic=not train)
            h = dense(f"mlp_{name}_1", (axes.EMBED, axes.MLP))(h)
            omega = self.param(
                f"omega_{name}", nn.initializers.ones, (self.hops + 1,), self.param_dtype
            )
            acc, cur = omega[0] * h, h
            for k in range(1, self.hops + 1):
                cur = _rw(graph, cur)
                acc = acc + omega[k] * cur
            zs.append(acc)
        return jnp.concatenate(zs, -1)


@LAYERS.register("dimpa")
class DIMPAConv(nn.Module):
    """DIMPA as a layer on one directed graph (edge s -> r is A_sr = 1): builds the two random-walk
    operators with self-loop weight `tau` (`dimpa_operators`) and returns [Z_s || Z_t] with
    features/2 channels each."""

    features: int
    hops: int = 2
    tau: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: G.Graph, x):
        if self.features % 2:
            raise UserError(
                f"dimpa layer: features={self.features} must be even (source and target halves)"
            )
        dtype = G.accum_dtype(x.dtype, graph.edge_weight.dtype)
        source, target = dimpa_operators(graph, self.tau, dtype)
        return DIMPA(
            self.features // 2, self.hops, 0.0, self.dtype, self.param_dtype, name="dimpa"
        )(source, target, x)


@MODELS.register("digrac")
class DIGRAC(nn.Module):
    """DIMPA embedding + linear prototype layer + softmax -> (probabilities P [n, K], Z)."""

    TASK = "digraph"
    num_clusters: int
    hidden: int = 32
    hops: int = 2
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, source: G.Graph, target: G.Graph, x, train: bool = False):
        z = DIMPA(self.hidden, self.hops, self.dropout, self.dtype, self.param_dtype, name="dimpa")(
            source, target, x, train
        )
        z = nn.Dropout(self.dropout)(z, deterministic=not train)
        logits = nn.Dense(
            self.num_clusters,
            name="prototypes",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (axes.MLP, axes.VOCAB)
            ),
        )(z)
        P = jax.nn.softmax(logits.astype(G.accum_dtype(logits.dtype)), -1)
        return P * source.node_mask[:, None].astype(P.dtype), z

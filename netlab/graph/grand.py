"""GRAND: Graph Neural Diffusion (Chamberlain, Rowbottom, Gorinova, Webb, Rossi & Bronstein,
ICML 2021).

Node features evolve by the diffusion PDE on the graph (eq. 1-3 of the paper)
    dX(t)/dt = div(G(X(t)) ∇X(t)) = (A(X(t)) - I) X(t),
where the diffusivity A is a row-stochastic attention matrix over each node's neighbours
(eq. 9, scaled dot-product attention averaged over h heads):
    a(X_i, X_j) = softmax_j( (W_K X_i)^T (W_Q X_j) / d_k ).
GRAND-l (linear) computes A once from X(0) and keeps it fixed, so X(T) = expm(T (A - I)) X(0);
GRAND-nl recomputes A(X(t)) at every function evaluation. The model is
    X(0) = φ(input) (encoder),  X(T) by an ODE solver,  ŷ = ψ(X(T)) (decoder).

Solvers come from the shared ODE core `netlab.nn.ode` (re-exported here: `integrate`,
`integrate_fixed`, `integrate_dopri5`, `euler_step`, `rk4_step`): explicit Euler and classical
RK4 with a fixed step count in `lax.scan`, and adaptive Dormand–Prince 5(4) ("dopri5") run for at
most `max_steps` step attempts inside `lax.scan` (rejected attempts and steps after reaching T are
no-ops), so it is jittable and reverse-mode differentiable; if T is not reached within the bound the
state at the last accepted time is returned (`integrate_dopri5` reports it). Differentiation is by
backpropagation through the solver (no adjoint).

Message passing uses netlab.graph.graphs (`gather`, `propagate`, `edge_softmax[_with_self]`).
`AttentionDiffusion` is the diffusion alone as a layer (`registries.LAYERS["grand"]`); the `GRAND`
model (`registries.MODELS["grand"]`) wraps the same functions between its encoder and decoder.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.nn.ode import (  # noqa: F401  (re-exported: the solvers GRAND uses)
    euler_step,
    integrate,
    integrate_dopri5,
    integrate_fixed,
    rk4_step,
)
from netlab.sharding import axes

METHODS = ("euler", "rk4", "dopri5")


# --------------------------------------------------------------------------------------------------
# GRAND
def diffusion_rhs(graph: G.Graph, x, edge_attn, self_attn=None):
    """(A - I) x for A given by per-edge weights a_ij (edge j -> i) and an optional self weight
    a_ii."""
    ax = G.propagate(graph, G.gather(graph, x), edge_attn)
    if self_attn is not None:
        ax = ax + self_attn[:, None].astype(x.dtype) * x
    mask = graph.node_mask[:, None].astype(x.dtype)
    return (ax - x) * mask


NORMS = ("softmax", "squareplus")
SCALES = ("dk", "sqrt_dk")
GROUPS = ("receivers", "senders")


def _normalize(graph: G.Graph, edge_logits, self_logits, norm: str, over: str):
    """Per-edge weights that sum to 1 over the edges sharing an endpoint (`over` = "receivers":
    each node's incoming edges, row-stochastic A; "senders": each node's outgoing edges,
    column-stochastic A), each node's self-loop (if `self_logits` is given) joining its own group.

    `norm` = "softmax", or "squareplus" (the authors' code: s - max s over the whole graph, then
    (s + sqrt(s^2 + 4)) / 2, divided by the group sum + 1e-16)."""
    if norm == "softmax" and over == "receivers":
        if self_logits is None:
            return G.edge_softmax(graph, edge_logits), None
        return G.edge_softmax_with_self(graph, edge_logits, self_logits)
    n = graph.num_nodes
    acc = G.accum_dtype(edge_logits.dtype)
    seg = graph.receivers if over == "receivers" else graph.senders
    mask = graph.edge_mask[:, None]
    el = jnp.where(mask, edge_logits.astype(acc), -jnp.inf)
    sl = None if self_logits is None else self_logits.astype(acc)
    if norm == "softmax":
        m = jax.ops.segment_max(el, seg, num_segments=n)
        if sl is not None:
            m = jnp.maximum(m, sl)
        m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
        ee = jnp.where(mask, jnp.exp(el - m[seg]), 0.0)
        es = None if sl is None else jnp.exp(sl - m)
    else:  # squareplus, shifted by the global maximum as in the authors' code
        m = jnp.max(el) if sl is None else jnp.maximum(jnp.max(el), jnp.max(sl))
        sq = lambda s: (s - m + jnp.sqrt((s - m) ** 2 + 4.0)) / 2  # noqa: E731
        ee = jnp.where(mask, sq(jnp.where(mask, el, m)), 0.0)
        es = None if sl is None else sq(sl)
    denom = jax.ops.segment_sum(ee, seg, num_segments=n)
    if es is not None:
        denom = denom + es
    denom = denom + (1e-16 if norm == "squareplus" else 0.0)
    denom = jnp.where(denom > 0, denom, 1.0)
    edge = (ee / denom[seg]).astype(edge_logits.dtype)
    return edge, None if es is None else (es / denom).astype(edge_logits.dtype)


def attention_weights(
    graph: G.Graph,
    x,
    wq,
    wk,
    self_loops: bool = False,
    *,
    bq=None,
    bk=None,
    norm: str = "softmax",
    scale: str = "dk",
    over: str = "receivers",
):
    """GRAND's diffusivity (eq. 9): multi-head scaled dot-product attention a_ij =
    softmax_j((W_K x_i)·(W_Q x_j)/d_k) over each receiver i's incoming edges j -> i (and i itself
    when `self_loops`), averaged over heads. wq, wk: [F, H, d_k]; bq, bk: optional [H, d_k] biases.
    Returns (edge_attn [E], self_attn [N] | None).

    The authors' code (graph-neural-pde, SpGraphTransAttentionLayer with the Cora settings) differs
    from eq. 9 in three ways, each an option here: the score is divided by sqrt(d_k)
    (`scale="sqrt_dk"`), normalised by squareplus instead of softmax (`norm="squareplus"`), and the
    normalisation runs over each neighbour's edges (attention_norm_idx=1 while torch_sparse.spmm
    aggregates at edge_index[0]: `over="senders"`, a column-stochastic A)."""
    dk = wq.shape[-1]
    q = jnp.einsum("nf,fhd->nhd", x, wq.astype(x.dtype))
    k = jnp.einsum("nf,fhd->nhd", x, wk.astype(x.dtype))
    if bq is not None:
        q, k = q + bq.astype(x.dtype), k + bk.astype(x.dtype)
    div = dk if scale == "dk" else jnp.sqrt(jnp.asarray(dk, x.dtype))
    logits = jnp.sum(G.gather(graph, k, "receivers") * G.gather(graph, q, "senders"), -1) / div
    self_logits = jnp.sum(k * q, -1) / div if self_loops else None
    ea, sa = _normalize(graph, logits, self_logits, norm, over)
    return ea.mean(-1), None if sa is None else sa.mean(-1)


def diffuse(
    graph: G.Graph,
    x0,
    wq,
    wk,
    *,
    time,
    method,
    num_steps,
    rtol,
    atol,
    max_steps,
    self_loops,
    nonlinear,
    attn: dict | None = None,
    alpha=None,
    beta=None,
):
    """X(T) of dX/dt = (A(X) - I) X from X(0) = x0 (eqs. 1-3): A from X(0) only (GRAND-l) or
    recomputed at every function evaluation (GRAND-nl, `nonlinear`). wq, wk: [F, H, d_k]; `attn`:
    keyword arguments of `attention_weights`.

    The authors' LaplacianODEFunc (with add_source) integrates alpha (A - I) X + beta X(0) instead:
    `alpha` scales the diffusion and `beta` adds the source term, with X(0) held constant for the
    gradient (the authors detach it in ODEblock.set_x0). None leaves a term out (alpha = 1)."""
    attn = attn or {}
    mask = graph.node_mask[:, None].astype(x0.dtype)
    src = None if beta is None else beta * jax.lax.stop_gradient(x0) * mask

    def rhs(x, ea, sa):
        dx = diffusion_rhs(graph, x, ea, sa)
        if alpha is not None:
            dx = alpha * dx
        return dx if src is None else dx + src

    if nonlinear:

        def f(x):
            return rhs(x, *attention_weights(graph, x, wq, wk, self_loops, **attn))
    else:
        ea, sa = attention_weights(graph, x0, wq, wk, self_loops, **attn)

        def f(x):
            return rhs(x, ea, sa)

    return integrate(f, x0, time, method, num_steps, rtol, atol, max_steps)


def _const_init(value):
    return axes.param(nn.initializers.constant(value), axes.EMBED, axes.HEADS, axes.KV)


def _qk_init():
    return axes.param(nn.initializers.lecun_normal(), axes.EMBED, axes.HEADS, axes.KV)


@LAYERS.register("grand")
class AttentionDiffusion(nn.Module):
    """GRAND's attention diffusion as a layer: X(T) from X(0) = x (projected to `features` by a
    bias-free linear map when the widths differ), with the query/key maps of eq. 9."""

    features: int | None = None
    time: float = 1.0
    method: str = "rk4"
    num_steps: int = 4
    rtol: float = 1e-3
    atol: float = 1e-4
    max_steps: int = 64
    heads: int = 1
    key_dim: int = 16
    self_loops: bool = False
    nonlinear: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: G.Graph, x):
        x = L.project(self, x, self.features)
        shape = (x.shape[-1], self.heads, self.key_dim)
        wq = self.param("query", _qk_init(), shape, self.param_dtype)
        wk = self.param("key", _qk_init(), shape, self.param_dtype)
        return diffuse(
            graph,
            x,
            wq,
            wk,
            time=self.time,
            method=self.method,
            num_steps=self.num_steps,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            self_loops=self.self_loops,
            nonlinear=self.nonlinear,
        )


@MODELS.register("grand")
class GRAND(nn.Module):
    """GRAND node classifier: encoder -> diffusion ODE to time T -> decoder.

    `nonlinear=False` is GRAND-l (attention from X(0), fixed); True is GRAND-nl."""

    TASK = "node"
    CHOICES = {
        "method": METHODS,
        "attention_norm": NORMS,
        "score_scale": SCALES,
        "normalize_over": GROUPS,
        "qk_init": ("lecun", "constant"),
        "diffusion_scale": ("one", "sigmoid"),
    }
    hidden_dim: int
    num_classes: int
    time: float = 3.0
    method: str = "rk4"
    num_steps: int = 8
    rtol: float = 1e-3
    atol: float = 1e-4
    max_steps: int = 64
    heads: int = 1
    key_dim: int = 16
    self_loops: bool = False
    nonlinear: bool = False
    input_dropout: float = 0.5
    dropout: float = 0.0
    # The authors' code (graph-neural-pde, Cora best_params) where it differs from the paper; the
    # defaults are the paper's. See `attention_weights` and `diffuse`.
    attention_norm: str = "softmax"  # | "squareplus"
    score_scale: str = "dk"  # | "sqrt_dk"
    normalize_over: str = "receivers"  # | "senders"
    qk_bias: bool = False
    qk_init: str = "lecun"  # | "constant": weights 1e-5 (the authors' init_weights)
    diffusion_scale: str = "one"  # | "sigmoid": alpha = sigmoid(a), a trained scalar, 0 at init
    source: bool = False  # + beta X(0), beta a trained scalar, 0 at init (add_source)
    encoder_dropout: bool = True  # dropout after the encoder (the authors' model has none)
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def setup(self):
        dense = lambda f, names: nn.Dense(  # noqa: E731
            f,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
        )
        self.encoder = dense(self.hidden_dim, (None, axes.EMBED))
        shape = (self.hidden_dim, self.heads, self.key_dim)
        init = _qk_init() if self.qk_init == "lecun" else _const_init(1e-5)
        self.wq = self.param("query", init, shape, self.param_dtype)
        self.wk = self.param("key", init, shape, self.param_dtype)
        if self.qk_bias:  # torch.nn.Linear's default bias init, U(-1/sqrt(F), 1/sqrt(F))
            b = 1 / self.hidden_dim**0.5
            binit = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -b, b)  # noqa: E731
            bshape = (self.heads, self.key_dim)
            self.bq = self.param("query_bias", binit, bshape, self.param_dtype)
            self.bk = self.param("key_bias", binit, bshape, self.param_dtype)
        if self.diffusion_scale == "sigmoid":
            self.alpha_raw = self.param("alpha", nn.initializers.zeros, (), self.param_dtype)
        if self.source:
            self.beta = self.param("beta", nn.initializers.zeros, (), self.param_dtype)
        self.decoder = dense(self.num_classes, (axes.EMBED, axes.VOCAB))
        self.in_drop = nn.Dropout(self.input_dropout)
        self.drop = nn.Dropout(self.dropout)

    def attn_kwargs(self):
        kw = dict(norm=self.attention_norm, scale=self.score_scale, over=self.normalize_over)
        if self.qk_bias:
            kw.update(bq=self.bq, bk=self.bk)
        return kw

    def attention(self, graph: G.Graph, x):
        return attention_weights(graph, x, self.wq, self.wk, self.self_loops, **self.attn_kwargs())

    def diffuse(self, graph: G.Graph, x0):
        # wq, wk are plain arrays here: safe to close over inside lax.scan
        return diffuse(
            graph,
            x0,
            self.wq,
            self.wk,
            time=self.time,
            method=self.method,
            num_steps=self.num_steps,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            self_loops=self.self_loops,
            nonlinear=self.nonlinear,
            attn=self.attn_kwargs(),
            alpha=jax.nn.sigmoid(self.alpha_raw) if self.diffusion_scale == "sigmoid" else None,
            beta=self.beta if self.source else None,
        )

    def __call__(self, graph: G.Graph, x, train: bool = False):
        x = self.in_drop(x, deterministic=not train)
        h = self.encoder(x)
        if self.encoder_dropout:
            h = self.drop(h, deterministic=not train)
        h = self.diffuse(graph, h)
        h = nn.relu(h)
        h = self.drop(h, deterministic=not train)
        return self.decoder(h)

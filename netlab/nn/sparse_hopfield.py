"""Sparse modern Hopfield retrieval: the generalized sparse Hopfield (GSH) layer of STanHop, Wu et
al. 2024, "STanHop: Sparse Tandem Hopfield Model for Memory-Enhanced Time Series Prediction"
(ICLR), Sec. 3.1 (after Hu et al. 2023, "On Sparse Modern Hopfield Model", NeurIPS).

The modern Hopfield update (Ramsauer et al. 2021, `netlab.nn.hopfield`) retrieves with a softmax,
xi_new = X softmax(beta X^T xi). GSH replaces the softmax by alpha-entmax (Peters et al. 2019):

    alpha-entmax(z)_i = [(alpha - 1) z_i - tau]_+ ^ (1 / (alpha - 1)),  tau such that sum = 1

alpha = 1 is the softmax (the limit), alpha = 2 sparsemax (Martins & Astudillo 2016, the
Euclidean projection onto the simplex). For alpha > 1 patterns whose score is far enough below
the best get exactly zero weight, which is why the sparse retrieval error is no larger than the
dense one for well-separated patterns (Hu et al. 2023, Thm. 3.1; STanHop Thm. 3.1): with
sparsemax, a pattern whose score beta <xi_mu, x> exceeds every other by at least 1 is retrieved
exactly, in one step.

- `sparsemax(z)`: optax's `projection_simplex` over the last axis.
- `entmax(z, alpha)`: tau by bisection (a fixed number of halvings: float32 resolution), with
  the exact Jacobian through `jax.custom_jvp`: on the support, with g_i = p_i^(2 - alpha),
  dp = g * dz - g (g . dz) / sum(g) (implicit differentiation of sum p = 1).
- `sparse_hopfield_update` / `retrieve`: eq. (3) of Ramsauer et al. with entmax.
- `SparseHopfieldLayer`: learned stored patterns read with entmax; a Transformer MLP
  replacement (`model.mlp = "sparse_hopfield"`).

Here alpha is a fixed setting; STanHop's learnable alpha, its tandem (time, then series) blocks
and its external memory plug-ins are in `netlab.nn.stanhop`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from netlab.nn.registries import MLPS
from netlab.sharding import axes

BISECTION_STEPS = 40


def sparsemax(z):
    """alpha = 2: the Euclidean projection of each row (last axis) onto the simplex."""
    flat = z.reshape(-1, z.shape[-1])
    return jax.vmap(optax.projections.projection_simplex)(flat).reshape(z.shape)


def _entmax_forward(z, alpha):
    a1 = alpha - 1.0
    s = a1 * z
    top = jnp.max(s, axis=-1, keepdims=True)
    # sum_i [s_i - tau]_+^(1/a1) is 1 or more at tau = top - 1 and 0 at tau = top
    lo, hi = top - 1.0, top

    def body(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        total = jnp.sum(jnp.maximum(s - mid, 0) ** (1.0 / a1), axis=-1, keepdims=True)
        return jnp.where(total >= 1, mid, lo), jnp.where(total >= 1, hi, mid)

    lo, _ = jax.lax.fori_loop(0, BISECTION_STEPS, body, (lo, hi))
    p = jnp.maximum(s - lo, 0) ** (1.0 / a1)
    return p / jnp.sum(p, axis=-1, keepdims=True)  # absorbs the last bisection step's error


@jax.custom_jvp
def _entmax(z, alpha):
    return _entmax_forward(z, alpha)


@_entmax.defjvp
def _entmax_jvp(primals, tangents):
    z, alpha = primals
    dz, _ = tangents  # alpha is a fixed setting (no gradient)
    p = _entmax(z, alpha)
    g = jnp.where(p > 0, p ** (2.0 - alpha), 0.0)
    gdz = jnp.sum(g * dz, axis=-1, keepdims=True)
    return p, g * dz - g * gdz / jnp.sum(g, axis=-1, keepdims=True)


def entmax(z, alpha: float = 1.5):
    """alpha-entmax over the last axis, alpha > 1 (alpha = 2 is `sparsemax`)."""
    if alpha <= 1:
        raise ValueError(f"alpha={alpha}: entmax needs alpha > 1 (alpha -> 1 is the softmax)")
    return _entmax(z.astype(jnp.float32), jnp.float32(alpha))


def normalize(logits, alpha: float):
    """softmax (alpha = 1), sparsemax (alpha = 2) or alpha-entmax over the last axis."""
    if alpha == 1:
        return jax.nn.softmax(logits, axis=-1)
    if alpha == 2:
        return sparsemax(logits)
    return entmax(logits, alpha)


def sparse_hopfield_update(xi, stored, beta, alpha: float = 2.0):
    """One GSH update, patterns as rows: alpha-entmax(beta xi X^T) X; xi (..., n, d), stored
    (..., m, d)."""
    logits = beta * jnp.einsum("...nd,...md->...nm", xi, stored)
    return jnp.einsum("...nm,...md->...nd", normalize(logits, alpha), stored)


def retrieve(xi, stored, beta, alpha: float = 2.0, steps: int = 1):
    for _ in range(steps):
        xi = sparse_hopfield_update(xi, stored, beta, alpha)
    return xi


@MLPS.register("sparse_hopfield")
class SparseHopfieldLayer(nn.Module):
    """Learned stored patterns (num_patterns, embed) read with alpha-entmax:
    (..., embed) -> (..., embed). Each token is a query; keys and values are the stored
    patterns' projections."""

    num_patterns: int = 64
    alpha: float = 1.5
    beta: float | None = None  # None: 1/sqrt(embed)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        d = x.shape[-1]
        beta = self.beta if self.beta is not None else d**-0.5
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0)
        stored = self.param(
            "stored_patterns",
            axes.param(nn.initializers.normal(1.0), None, axes.EMBED),
            (self.num_patterns, d),
            jnp.float32,
        )
        w_q, w_k, w_v = (
            self.param(n, axes.param(init, axes.EMBED, None), (d, d), jnp.float32)
            for n in ("w_q", "w_k", "w_v")
        )
        dt = self.dtype
        q = x.astype(dt) @ w_q.astype(dt)
        k = stored.astype(dt) @ w_k.astype(dt)
        logits = beta * jnp.einsum("...d,md->...m", q, k).astype(jnp.float32)
        probs = normalize(logits, self.alpha).astype(dt)
        return jnp.einsum("...m,md->...d", probs, k @ w_v.astype(dt))

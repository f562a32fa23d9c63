"""STanHop: Wu, Hu, Hsu, Kuo, Liu & Liu 2024, "STanHop: Sparse Tandem Hopfield Model for
Memory-Enhanced Time Series Prediction" (ICLR).

Builds on `netlab.nn.sparse_hopfield` (fixed-alpha entmax retrieval) with what that file leaves
out:

- `gsh_normalize(z, alpha)`: alpha-entmax whose alpha is a traced value, differentiable in alpha
  (STanHop learns the sparsity: alpha in [1, 2] per layer). alpha = 1 is the softmax
  (selected exactly, no division by alpha - 1), alpha = 2 sparsemax. The derivative in alpha is
  the implicit one of Peters, Niculae & Martins 2019 (Sparse Sequence-to-Sequence Models):
  with p the output, g = p^(2 - alpha) on the support, p~ = g / sum(g), S = p log p:
      dp/dalpha = (p - p~) / (alpha - 1)^2 - (S - p~ sum(S)) / (alpha - 1).
- `gsh_update(xi, stored, beta, alpha)`: the generalized sparse Hopfield update,
  alpha-entmax(beta xi Y^T) Y (patterns as rows).
- `GSH`: the GSH layer: queries R W_Q retrieve from Y W_K, values Y W_K W_V,
  multi-head, learnable alpha = 1 + sigmoid(a) per head (initialised at `alpha_init`).
- `GSHPooling`: learned queries pool a set (the memory-retrieval / router form).
- `TandemBlock`: STanHop-Block's tandem sparse Hopfield, on z (batch, series, segments,
  d): first GSH self-retrieval over time (segments, per series), then over the series axis
  through `routers` learned router queries (a GSHPooling gathers from all series, a GSH distributes
  back; linear in the number of series, as Crossformer's router), each with a residual, a
  LayerNorm and an MLP.
- `MemoryPlugin`: the external memory modules: z + GSH(z, M). Plug-and-Play: M is
  given at call time (e.g. embeddings of other series or past windows), no trainable memory;
  Tune-and-Play: M is a learned parameter (`num_memories` slots) when no memory is passed.

The full STanHop-Net (Fig. 1: patch embedding, multi-resolution segment merging, the decoder)
is `netlab.nn.stanhop_net`; `tests/nn/test_stanhop.py` checks the pieces here.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn.sparse_hopfield import _entmax_forward


@jax.custom_jvp
def _entmax(z, alpha):
    return _entmax_forward(z, alpha)


@_entmax.defjvp
def _entmax_jvp(primals, tangents):
    z, alpha = primals
    dz, dalpha = tangents
    p = _entmax(z, alpha)
    a1 = alpha - 1.0
    g = jnp.where(p > 0, p ** (2.0 - alpha), 0.0)
    skew = g / jnp.sum(g, axis=-1, keepdims=True)
    dp_z = g * dz - skew * jnp.sum(g * dz, axis=-1, keepdims=True)
    s = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    dp_alpha = (p - skew) / a1**2 - (s - skew * jnp.sum(s, axis=-1, keepdims=True)) / a1
    return p, dp_z + dp_alpha * dalpha


def gsh_normalize(z, alpha):
    """alpha-entmax over the last axis, alpha traced, in [1, 2], broadcast against z[..., :1]."""
    z = z.astype(jnp.float32)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), z.shape[:-1] + (1,))
    is_soft = alpha <= 1.0
    safe = jnp.where(is_soft, 1.5, alpha)  # keeps the unused branch finite (and its gradient)
    return jnp.where(is_soft, jax.nn.softmax(z, axis=-1), _entmax(z, safe))


def gsh_update(xi, stored, beta, alpha):
    """Generalized sparse Hopfield update: entmax(beta xi Y^T) Y; xi (..., n, d),
    stored (..., m, d)."""
    logits = beta * jnp.einsum("...nd,...md->...nm", xi, stored)
    return jnp.einsum("...nm,...md->...nd", gsh_normalize(logits, alpha), stored)


class GSH(nn.Module):
    """GSH layer: queries (..., n, d_q) retrieve from stored (..., m, d_y) -> (..., n, d_model)."""

    d_model: int
    num_heads: int = 2
    alpha_init: float = 1.5  # in (1, 2)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, queries, stored):
        h, dh = self.num_heads, self.d_model // self.num_heads
        q = nn.DenseGeneral((h, dh), name="w_q", dtype=self.dtype)(queries)
        k = nn.DenseGeneral((h, dh), name="w_k", dtype=self.dtype)(stored)
        v = nn.DenseGeneral((h, dh), name="w_v", dtype=self.dtype, axis=(-2, -1))(k)
        v = v.reshape(v.shape[:-2] + (h, dh))
        frac = (self.alpha_init - 1.0) / (2.0 - self.alpha_init)
        a = self.param("alpha_logit", nn.initializers.constant(jnp.log(frac)), (h,))
        alpha = 1.0 + jax.nn.sigmoid(a)
        logits = jnp.einsum("...nhd,...mhd->...hnm", q, k).astype(jnp.float32) * dh**-0.5
        probs = gsh_normalize(logits, alpha[:, None, None]).astype(v.dtype)
        out = jnp.einsum("...hnm,...mhd->...nhd", probs, v)
        return nn.DenseGeneral(self.d_model, axis=(-2, -1), name="w_o", dtype=self.dtype)(out)


class GSHPooling(nn.Module):
    """`num_queries` learned queries retrieve from a set (..., m, d) -> (..., num_queries, d)."""

    num_queries: int
    d_model: int
    num_heads: int = 2
    alpha_init: float = 1.5

    @nn.compact
    def __call__(self, stored):
        q = self.param("queries", nn.initializers.normal(1.0), (self.num_queries, stored.shape[-1]))
        q = jnp.broadcast_to(q, stored.shape[:-2] + q.shape)
        return GSH(self.d_model, self.num_heads, self.alpha_init)(q, stored)


class _AddNormMLP(nn.Module):
    @nn.compact
    def __call__(self, x, update):
        x = nn.LayerNorm()(x + update)
        d = x.shape[-1]
        return nn.LayerNorm()(x + nn.Dense(d)(nn.gelu(nn.Dense(2 * d)(x))))


class TandemBlock(nn.Module):
    """Tandem sparse Hopfield on z (batch, series, segments, d): time, then series."""

    num_heads: int = 2
    routers: int = 4
    alpha_init: float = 1.5

    @nn.compact
    def __call__(self, z):
        d = z.shape[-1]
        z = _AddNormMLP()(z, GSH(d, self.num_heads, self.alpha_init, name="time")(z, z))
        zs = jnp.swapaxes(z, 1, 2)  # (batch, segments, series, d)
        routed = GSHPooling(self.routers, d, self.num_heads, self.alpha_init, name="gather")(zs)
        back = GSH(d, self.num_heads, self.alpha_init, name="scatter")(zs, routed)
        return jnp.swapaxes(_AddNormMLP()(zs, back), 1, 2)


class MemoryPlugin(nn.Module):
    """External memory: z + GSH(z, M), M given (Plug-and-Play) or learned
    (Tune-and-Play, `num_memories` slots)."""

    num_memories: int = 8
    num_heads: int = 2
    alpha_init: float = 1.5

    @nn.compact
    def __call__(self, z, memory=None):
        d = z.shape[-1]
        if memory is None:
            memory = self.param("memory", nn.initializers.normal(1.0), (self.num_memories, d))
        memory = jnp.broadcast_to(memory, z.shape[:-2] + memory.shape[-2:])
        return z + GSH(d, self.num_heads, self.alpha_init)(z, memory)

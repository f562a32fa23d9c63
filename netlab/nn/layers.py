"""Shared linen blocks with logical axis names: dense, attention, MLP, embeddings, adaLN modulation.

Parameters are float32; `dtype` is the compute dtype. Every weight names its axes from
`netlab.sharding.axes`, so the same module shards by the rules of whatever config uses it.
"""
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from netlab.sharding import axes

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def dense(features, in_axis, out_axis, dtype=jnp.float32, kernel_init=xavier, name=None, use_bias=True):
    return nn.Dense(features, dtype=dtype, use_bias=use_bias, name=name,
                    kernel_init=axes.param(kernel_init, in_axis, out_axis),
                    bias_init=axes.param(zeros, out_axis))


def layer_norm(dtype=jnp.float32, affine=True, name=None, epsilon=1e-6):
    return nn.LayerNorm(epsilon=epsilon, use_bias=affine, use_scale=affine, dtype=dtype, name=name,
                        scale_init=axes.param(nn.initializers.ones, axes.NORM),
                        bias_init=axes.param(zeros, axes.NORM))


class Attention(nn.Module):
    """Multi-head self-attention on (batch, length, embed); float32 softmax."""
    num_heads: int
    dtype: Any = jnp.float32
    causal: bool = False

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}; pick a divisor")
        head = d // self.num_heads
        # Explicit (embed, 3, heads, kv) weights: DenseGeneral initialises a flattened kernel, which
        # would not carry four logical axis names.
        w_qkv = self.param("qkv", axes.param(nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                                               in_axis=0, out_axis=(1, 2, 3)),
                                             axes.EMBED, None, axes.HEADS, axes.KV), (d, 3, self.num_heads, head))
        b_qkv = self.param("qkv_bias", axes.param(zeros, None, axes.HEADS, axes.KV), (3, self.num_heads, head))
        qkv = jnp.einsum("bnd,dthk->bnthk", x, w_qkv.astype(self.dtype)) + b_qkv.astype(self.dtype)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = axes.constrain(q, axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(head)
        if self.causal:
            mask = np.tril(np.ones((n, n), bool))
            logits = jnp.where(mask, logits, -1e30)
        weights = nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        w_out = self.param("out", axes.param(nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                                               in_axis=(0, 1), out_axis=2),
                                             axes.HEADS, axes.KV, axes.EMBED), (self.num_heads, head, d))
        b_out = self.param("out_bias", axes.param(zeros, axes.EMBED), (d,))
        return jnp.einsum("bqhk,hkd->bqd", out, w_out.astype(self.dtype)) + b_out.astype(self.dtype)


class Mlp(nn.Module):
    """Two-layer feed-forward block (GELU, tanh approximation as in ViT/DiT)."""
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(self.hidden, axes.EMBED, axes.MLP, self.dtype, name="fc1")(x)
        h = axes.constrain(nn.gelu(h, approximate=True), axes.BATCH, axes.LENGTH, axes.MLP)
        return dense(x.shape[-1], axes.MLP, axes.EMBED, self.dtype, name="fc2")(h)


def sinusoidal_embedding(t, dim: int, max_period: float = 10000.0):
    """Sinusoidal features of a float32 scalar per example (DDPM / Transformer); t: (batch,)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def sincos_2d(grid: int, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding (grid*grid, dim), as in MAE / DiT."""
    if dim % 4:
        raise ValueError(f"position embedding width {dim} must be divisible by 4")
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))

    def one(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(ys), one(xs)], axis=1).astype(np.float32)


class TimestepEmbedder(nn.Module):
    """Float32 sinusoidal features of the noise level -> MLP (kept float32 under bf16, pitfall #2)."""
    width: int
    freq_dim: int = 256

    @nn.compact
    def __call__(self, t):
        h = sinusoidal_embedding(t, self.freq_dim)
        init = nn.initializers.normal(0.02)
        h = dense(self.width, None, axes.MLP, jnp.float32, kernel_init=init, name="fc1")(h)
        return dense(self.width, axes.MLP, axes.EMBED, jnp.float32, kernel_init=init, name="fc2")(nn.silu(h))


def modulate(x, shift, scale):
    """adaLN: x * (1 + scale) + shift, broadcast over the length axis."""
    return x * (1 + scale[:, None]) + shift[:, None]

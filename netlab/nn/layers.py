"""Shared linen blocks with logical axis names: dense, attention, MLP, embeddings, adaLN modulation.

Parameters are float32; `dtype` is the compute dtype. Every weight names its axes from
`netlab.sharding.axes`, so the same module shards by the rules of whatever config uses it.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from netlab.nn.attention import Attention  # noqa: F401  (re-exported for old imports)
from netlab.nn.registries import MLPS
from netlab.sharding import axes

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def dense(
    features, in_axis, out_axis, dtype=jnp.float32, kernel_init=xavier, name=None, use_bias=True
):
    return nn.Dense(
        features,
        dtype=dtype,
        use_bias=use_bias,
        name=name,
        kernel_init=axes.param(kernel_init, in_axis, out_axis),
        bias_init=axes.param(zeros, out_axis),
    )


def layer_norm(dtype=jnp.float32, affine=True, name=None, epsilon=1e-6):
    return nn.LayerNorm(
        epsilon=epsilon,
        use_bias=affine,
        use_scale=affine,
        dtype=dtype,
        name=name,
        scale_init=axes.param(nn.initializers.ones, axes.NORM),
        bias_init=axes.param(zeros, axes.NORM),
    )


@MLPS.register("dense")
class Mlp(nn.Module):
    """Two-layer feed-forward block (GELU, tanh approximation as in ViT/DiT)."""

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = dense(self.hidden, axes.EMBED, axes.MLP, self.dtype, name="fc1")(x)
        h = axes.constrain(nn.gelu(h, approximate=True), axes.BATCH, axes.LENGTH, axes.MLP)
        return dense(x.shape[-1], axes.MLP, axes.EMBED, self.dtype, name="fc2")(h)


def sinusoidal_embedding(t, dim: int, max_period: float = 10000.0, freq_shift: float = 0.0):
    """Sinusoidal features [cos, sin] of a float32 scalar per example (DDPM / Transformer);
    t: (batch,). Frequencies max_period^(-i / (dim/2 - freq_shift)): 0 as in DiT, 1 as diffusers'
    `downscale_freq_shift=1` (its DiT port)."""
    half = dim // 2
    denom = half - freq_shift if freq_shift else half
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / denom)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def sincos_2d(grid: int, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding (grid*grid, dim), as in MAE / DiT."""
    if dim % 4:
        raise ValueError(f"position embedding width {dim} must be divisible by 4")
    ys, xs = np.meshgrid(
        np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij"
    )
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))

    def one(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(ys), one(xs)], axis=1).astype(np.float32)


class TimestepEmbedder(nn.Module):
    """Float32 sinusoidal features of the noise level -> MLP (kept float32 under bf16, pitfall #2)."""  # noqa: E501

    width: int
    freq_dim: int = 256
    freq_shift: float = 0.0  # 1.0: diffusers' DiT (`sinusoidal_embedding`)

    @nn.compact
    def __call__(self, t):
        h = sinusoidal_embedding(t, self.freq_dim, freq_shift=self.freq_shift)
        init = nn.initializers.normal(0.02)
        h = dense(self.width, None, axes.MLP, jnp.float32, kernel_init=init, name="fc1")(h)
        return dense(self.width, axes.MLP, axes.EMBED, jnp.float32, kernel_init=init, name="fc2")(
            nn.silu(h)
        )


def modulate(x, shift, scale):
    """adaLN: x * (1 + scale) + shift, broadcast over the length axis."""
    return x * (1 + scale[:, None]) + shift[:, None]

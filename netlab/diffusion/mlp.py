"""A small residual MLP denoiser for low-dimensional data (the 2-D toy task)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.nn import layers
from netlab.sharding import axes


class MlpDenoiser(nn.Module):
    dim: int
    width: int = 128
    depth: int = 3
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, noise_cond, labels=None):
        c = layers.TimestepEmbedder(self.width, name="t_embed")(noise_cond)
        if self.num_classes:
            table = self.param("label_embed", axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                               (self.num_classes + 1, self.width), jnp.float32)
            c = c + table[labels]
        h = layers.dense(self.width, None, axes.EMBED, self.dtype, name="inp")(x.astype(self.dtype))
        for i in range(self.depth):
            z = layers.layer_norm(self.dtype, name=f"ln{i}")(h) + c.astype(self.dtype)
            h = h + layers.Mlp(2 * self.width, self.dtype, name=f"mlp{i}")(nn.silu(z)[:, None])[:, 0]
        return layers.dense(self.dim, axes.EMBED, None, self.dtype, name="out")(h).astype(jnp.float32)

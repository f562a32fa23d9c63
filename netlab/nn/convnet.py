"""A small convolutional classifier with logical axis names.

Shared by the digits classification task (`netlab.classify`) and the digits Frechet distance of the
diffusion pillar (`netlab.diffusion.metrics`, its hidden layer as the feature extractor), so it
lives here rather than in either pillar.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from netlab.sharding import axes


class ConvNet(nn.Module):
    """conv(3x3) blocks -> flatten -> hidden layer -> logits. Compute in `dtype`; parameters and
    outputs float32 (float64 in float64 runs)."""

    channels: Sequence[int] = (32, 64)
    hidden: int = 128
    num_classes: int = 10
    dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, x, features: bool = False):
        """Logits (B, num_classes); with `features`, the hidden layer's activations (B, hidden)."""
        fdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        x = x.astype(self.dtype)
        block = ConvBlock
        if self.remat_policy is not None:
            block = nn.remat(ConvBlock, policy=self.remat_policy)
        for i, c in enumerate(self.channels):
            x = block(c, self.dtype, name=f"block{i}")(x)
        x = axes.constrain(x.reshape(x.shape[0], -1), axes.BATCH, None)
        x = nn.Dense(
            self.hidden,
            dtype=self.dtype,
            kernel_init=axes.param(nn.initializers.lecun_normal(), axes.EMBED, axes.MLP),
            bias_init=axes.param(nn.initializers.zeros, axes.MLP),
            name="hidden",
        )(x)
        x = nn.gelu(x)
        if features:
            return x.astype(fdt)
        head_init = axes.param(nn.initializers.lecun_normal(), axes.MLP, axes.VOCAB)
        logits = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            kernel_init=head_init,
            bias_init=axes.param(nn.initializers.zeros, axes.VOCAB),
            name="head",
        )(x)
        return logits.astype(fdt)


class ConvBlock(nn.Module):
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = axes.param(nn.initializers.lecun_normal(), None, None, axes.CONV_IN, axes.CONV_OUT)
        x = nn.Conv(
            self.features,
            (3, 3),
            dtype=self.dtype,
            kernel_init=init,
            bias_init=axes.param(nn.initializers.zeros, axes.CONV_OUT),
        )(x)
        x = nn.LayerNorm(
            dtype=self.dtype,
            scale_init=axes.param(nn.initializers.ones, axes.NORM),
            bias_init=axes.param(nn.initializers.zeros, axes.NORM),
        )(x)
        x = nn.gelu(x)
        return axes.constrain(x, axes.BATCH, None, None, axes.CONV_OUT)

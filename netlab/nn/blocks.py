"""Transformer blocks that take their MLP as an argument, so one block serves dense and MoE models.

`mlp` is a factory: called as `mlp(name="mlp")` it returns a module whose `__call__(x, train)` maps
(batch, length, embed) -> (batch, length, embed); `train` must be accepted even when unused.
`netlab.nn.layers.Mlp` is the dense choice; an
MoE layer is the sparse one (its auxiliary losses go to the `netlab.nn.aux` collections, so the
block does not see them). Pass `functools.partial(Cls, **fields)` to fix the MLP's fields.

- `PreLNBlock`: x += Attn(LN(x)); x += MLP(LN(x)) (Xiong et al. 2020, the GPT-2 / ViT layout).
- `AdaLNZeroBlock`: DiT's block (Peebles & Xie 2023, Fig. 3): shift/scale/gate regressed from the
  conditioning c by a zero-initialised linear layer, so the block starts as the identity.
"""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from netlab.nn import layers
from netlab.nn.attention import Attention
from netlab.sharding import axes


class PreLNBlock(nn.Module):
    num_heads: int
    mlp: Callable[..., nn.Module]
    dtype: Any = jnp.float32
    causal: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = layers.layer_norm(self.dtype, name="ln1")(x)
        x = x + Attention(self.num_heads, self.dtype, causal=self.causal, name="attn")(h)
        h = layers.layer_norm(self.dtype, name="ln2")(x)
        x = x + self.mlp(name="mlp")(h, train=train)
        return axes.constrain(x, axes.BATCH, axes.LENGTH, axes.EMBED)


class AdaLNZeroBlock(nn.Module):
    width: int
    num_heads: int
    mlp: Callable[..., nn.Module]
    dtype: Any = jnp.float32
    mlp_norm_eps: float = 1e-6  # the MLP branch's LayerNorm; diffusers' DiT port uses 1e-5

    @nn.compact
    def __call__(self, x, c, train: bool = False):
        pdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        mod = layers.dense(
            6 * self.width, axes.EMBED, axes.MLP, pdt, kernel_init=layers.zeros, name="adaLN"
        )(nn.silu(c))
        s1, sc1, g1, s2, sc2, g2 = jnp.split(mod.astype(self.dtype), 6, axis=-1)
        # Attention branch, gated
        h = layers.modulate(layers.layer_norm(self.dtype, affine=False, name="ln1")(x), s1, sc1)
        x = x + g1[:, None] * Attention(self.num_heads, self.dtype, name="attn")(h)
        # MLP branch (dense or MoE), gated
        ln2 = layers.layer_norm(self.dtype, affine=False, name="ln2", epsilon=self.mlp_norm_eps)
        h = layers.modulate(ln2(x), s2, sc2)
        x = x + g2[:, None] * self.mlp(name="mlp")(h, train=train)
        return axes.constrain(x, axes.BATCH, axes.LENGTH, axes.EMBED)

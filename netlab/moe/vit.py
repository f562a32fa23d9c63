"""ViT-MoE: a Vision Transformer whose MLPs are MoE layers every `moe_every` blocks.

Riquelme et al. 2021, "Scaling Vision with Sparse Mixture of Experts" (V-MoE), §2: MoE replaces
the MLP of every other encoder block; routing groups are the images' patch tokens. Encoders are not
causal, so expert choice (Zhou et al. 2022), Soft MoE (Puigcerver et al. 2024) and SMEAR are
allowed here. Blocks are `netlab.nn.blocks.PreLNBlock`s; mean-pooled tokens -> linear classifier.
Returns logits; the MoE layers' losses and metrics go to the `netlab.nn.aux` collections.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe.layer import is_moe_layer
from netlab.moe.registries import MODELS
from netlab.moe.shared import DenseMLP, check_transformer, mlp_factory, remat
from netlab.nn import layers
from netlab.nn.blocks import PreLNBlock
from netlab.sharding import axes


def patches(images, p: int, key: str = "model.patch"):
    """(B, H, W, C) -> (B, H/p * W/p, p*p*C) non-overlapping patches, row-major."""
    b, h, w, c = images.shape
    if h % p or w % p:
        raise UserError(
            f"{key}={p}: image {h}x{w} is not divisible into {p}x{p} patches; choose "
            f"a patch size dividing both"
        )
    return (
        images.reshape(b, h // p, p, w // p, p, c)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(b, -1, p * p * c)
    )


@MODELS.register("vit")
class ViTMoE(nn.Module):
    inputs = "images"

    num_classes: int = 10
    patch: int = 2
    width: int = 32
    depth: int = 4
    num_heads: int = 4
    mlp_hidden: int = 64
    moe_every: int = 2
    moe: dict = None
    dtype: Any = jnp.float32
    remat_policy: Any = None

    def check(self, input_shape=None):
        check_transformer(self, input_shape)

    def num_moe_layers(self) -> int:
        return sum(is_moe_layer(i, self.moe_every) for i in range(self.depth))

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = patches(images, self.patch)
        kernel = self.param(
            "patch_embed",
            axes.param(nn.initializers.lecun_normal(), None, axes.EMBED),
            (x.shape[-1], self.width),
        )
        pos = self.param(
            "pos",
            axes.param(nn.initializers.normal(0.02), None, axes.EMBED),
            (x.shape[1], self.width),
        )
        x = x.astype(self.dtype) @ kernel.astype(self.dtype) + pos.astype(self.dtype)
        x = axes.constrain(x, axes.BATCH, axes.LENGTH, axes.EMBED)
        sparse = mlp_factory(self.moe, self.dtype)
        dense = functools.partial(DenseMLP, self.mlp_hidden, self.dtype)
        block = remat(PreLNBlock, self.remat_policy)
        for i in range(self.depth):
            mlp = sparse if is_moe_layer(i, self.moe_every) else dense
            x = block(self.num_heads, mlp, self.dtype, name=f"block{i}")(x, train)
        x = layers.layer_norm(self.dtype, name="ln_f")(x).mean(1)
        head = self.param(
            "head",
            axes.param(nn.initializers.zeros, axes.EMBED, axes.VOCAB),
            (self.width, self.num_classes),
        )
        return x.astype(jnp.float32) @ head

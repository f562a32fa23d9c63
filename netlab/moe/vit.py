"""ViT-MoE: a Vision Transformer whose MLPs are MoE layers every `moe_every` blocks.

Riquelme et al. 2021, "Scaling Vision with Sparse Mixture of Experts" (V-MoE), §2: MoE replaces
the MLP of every other encoder block; routing groups are the images' patch tokens. Encoders are not
causal, so expert choice (Zhou et al. 2022) and Soft MoE (Puigcerver et al. 2024) are allowed here.
Mean-pooled tokens -> linear classifier. Returns (logits, per-MoE-layer aux dicts).
"""
import flax.linen as nn
import jax.numpy as jnp

from netlab.moe.layer import MoEMLP
from netlab.moe.lm import DenseMLP
from netlab.nn import layers
from netlab.sharding import axes


class ViTMoE(nn.Module):
    num_classes: int = 10
    patch: int = 2
    width: int = 32
    depth: int = 4
    num_heads: int = 4
    mlp_hidden: int = 64
    moe_every: int = 2
    moe: dict = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        b, h, w, c = images.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"image {h}x{w} is not divisible into {p}x{p} patches; choose a patch size dividing both")
        x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
        kernel = self.param("patch_embed", axes.param(nn.initializers.lecun_normal(), None, axes.EMBED),
                            (p * p * c, self.width))
        pos = self.param("pos", axes.param(nn.initializers.normal(0.02), None, axes.EMBED), (x.shape[1], self.width))
        x = (x.astype(self.dtype) @ kernel.astype(self.dtype) + pos.astype(self.dtype))
        x = axes.constrain(x, axes.BATCH, axes.LENGTH, axes.EMBED)
        aux = []
        for i in range(self.depth):
            x = x + layers.Attention(self.num_heads, self.dtype, name=f"attn_{i}")(
                layers.layer_norm(self.dtype, name=f"ln1_{i}")(x))
            hdn = layers.layer_norm(self.dtype, name=f"ln2_{i}")(x)
            if i % self.moe_every == self.moe_every - 1:
                y, a = MoEMLP(dtype=self.dtype, name=f"moe_{i}", **dict(self.moe or {}))(hdn, train)
                aux.append(a)
            else:
                y = DenseMLP(self.mlp_hidden, self.dtype, name=f"mlp_{i}")(hdn)
            x = axes.constrain(x + y, axes.BATCH, axes.LENGTH, axes.EMBED)
        x = layers.layer_norm(self.dtype, name="ln_f")(x).mean(1)
        head = self.param("head", axes.param(nn.initializers.zeros, axes.EMBED, axes.VOCAB), (self.width, self.num_classes))
        return x.astype(jnp.float32) @ head, aux

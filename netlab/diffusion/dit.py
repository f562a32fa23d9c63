"""DiT: a Transformer on image patches with adaLN-Zero conditioning.

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers": patchify (Sec. 3.2), DiT
blocks with adaLN-Zero (Fig. 3: shift/scale/gate regressed from the timestep + class embedding,
initialised to zero so every block starts as the identity), fixed 2-D sin-cos positions, and
presets S/B/L/XL (Table 1) with patch sizes 2/4/8. The class table holds one extra "null" row for
classifier-free guidance (label dropout happens in the loss). With `learn_logvar` the model also
returns EDM2's per-example log-variance u(noise) for the uncertainty-weighted loss.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.nn import layers
from netlab.sharding import axes

PRESETS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def preset(name: str) -> dict:
    """'B/2' -> dict(depth, width, num_heads, patch)."""
    size, _, patch = name.partition("/")
    if size not in PRESETS or patch not in ("2", "4", "8"):
        raise ValueError(f"unknown DiT preset {name!r}; use one of S|B|L|XL with /2, /4 or /8, e.g. 'B/2'")
    depth, width, heads = PRESETS[size]
    return dict(depth=depth, width=width, num_heads=heads, patch=int(patch))


class DiTBlock(nn.Module):
    width: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c):
        mod = layers.dense(6 * self.width, axes.EMBED, axes.MLP, jnp.float32, kernel_init=layers.zeros,
                           name="adaLN")(nn.silu(c))
        s1, sc1, g1, s2, sc2, g2 = jnp.split(mod.astype(self.dtype), 6, axis=-1)
        h = layers.modulate(layers.layer_norm(self.dtype, affine=False, name="ln1")(x), s1, sc1)
        x = x + g1[:, None] * layers.Attention(self.num_heads, self.dtype, name="attn")(h)
        h = layers.modulate(layers.layer_norm(self.dtype, affine=False, name="ln2")(x), s2, sc2)
        x = x + g2[:, None] * layers.Mlp(int(self.width * self.mlp_ratio), self.dtype, name="mlp")(h)
        return axes.constrain(x, axes.BATCH, axes.LENGTH, axes.EMBED)


class DiT(nn.Module):
    image_size: int
    channels: int
    patch: int = 2
    width: int = 384
    depth: int = 12
    num_heads: int = 6
    num_classes: int = 0            # 0: unconditional
    mlp_ratio: float = 4.0
    learn_logvar: bool = False
    dtype: Any = jnp.float32
    remat_policy: Any = None

    def setup_check(self):
        if self.image_size % self.patch:
            raise ValueError(f"image size {self.image_size} is not divisible by the patch size {self.patch}; "
                             f"pick a patch that divides it")

    @nn.compact
    def __call__(self, x, noise_cond, labels=None):
        """x: (B, H, W, C); noise_cond: (B,) float32; labels: (B,) int in [0, num_classes] (last = null)."""
        self.setup_check()
        b, p, g = x.shape[0], self.patch, self.image_size // self.patch
        h = nn.Conv(self.width, (p, p), strides=(p, p), dtype=self.dtype, name="patchify",
                    kernel_init=axes.param(layers.xavier, None, None, None, axes.EMBED),
                    bias_init=axes.param(layers.zeros, axes.EMBED))(x.astype(self.dtype))
        h = h.reshape(b, g * g, self.width) + layers.sincos_2d(g, self.width).astype(self.dtype)
        h = axes.constrain(h, axes.BATCH, axes.LENGTH, axes.EMBED)
        c = layers.TimestepEmbedder(self.width, name="t_embed")(noise_cond)
        if self.num_classes:
            table = self.param("label_embed", axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                               (self.num_classes + 1, self.width), jnp.float32)
            c = c + table[labels]
        for i in range(self.depth):
            h = self.apply_block(i, h, c)
        shift, scale = jnp.split(layers.dense(2 * self.width, axes.EMBED, axes.MLP, jnp.float32,
                                              kernel_init=layers.zeros, name="final_adaLN")(nn.silu(c)), 2, axis=-1)
        h = layers.modulate(layers.layer_norm(self.dtype, affine=False, name="final_ln")(h),
                            shift.astype(self.dtype), scale.astype(self.dtype))
        h = layers.dense(p * p * self.channels, axes.EMBED, None, self.dtype, kernel_init=layers.zeros,
                         name="final")(h)
        out = h.reshape(b, g, g, p, p, self.channels).transpose(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, self.image_size, self.image_size, self.channels).astype(jnp.float32)
        if not self.learn_logvar:
            return out
        logvar = layers.dense(1, axes.EMBED, None, jnp.float32, kernel_init=layers.zeros, name="logvar")(c)[:, 0]
        return out, logvar

    def apply_block(self, i, h, c):
        """Block i of the trunk; subclasses (DiT-MoE) replace some blocks here and keep the rest."""
        block = DiTBlock if self.remat_policy is None else nn.remat(DiTBlock, policy=self.remat_policy)
        return block(self.width, self.num_heads, self.mlp_ratio, self.dtype, name=f"block{i}")(h, c)

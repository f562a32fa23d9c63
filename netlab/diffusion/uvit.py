"""U-ViT: simple diffusion's U-Net with a Transformer at its lowest resolution.

Hoogeboom, Heek & Salimans 2023, "simple diffusion: end-to-end diffusion for high resolution
images" (the U-ViT of its architecture section): convolutional ResBlock stages take the
image down to a low resolution, where the remaining depth is a stack of Transformer blocks on the
feature-map positions (their "U-ViT" replaces the conv blocks of the low-resolution levels, where
most of the capacity sits, by MLP/attention blocks); the decoder mirrors the encoder, and U-Net
skip connections exist only between the high-resolution conv stages, none inside the Transformer.
Dropout: the paper applies it only away from the highest-resolution feature maps; here it acts in
the low-resolution Transformer blocks (after attention and after the MLP) and the conv stages have
none (`unet.ResBlock` takes no dropout at all) -- the same thing with one conv level, as in the
digits config; with several, the intermediate conv levels go without. The training objective
that goes with it is the multiscale loss (`simple_diffusion.py`) and the shifted
cosine schedule of Sec. 3.1 (`schedules.cosine_shifted` with `diffusion.shift`), both the
defaults of `configs/diffusion/digits_uvit.py:backbone=uvit`.

The conv stages are ADM's ResBlocks (`unet.ResBlock`: GroupNorm, AdaGN from the embedding, down /
up resampling inside the block). Conditioning in the Transformer blocks is adaLN-Zero (DiT's
shift/scale/gate from the noise + class embedding): the paper does not say how its U-ViT blocks are
conditioned; this choice starts every block as the identity. The paper's optional first-layer
downsampling (a 5/3 wavelet or a stride-d convolution) is left out: digits are 8 x 8.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from netlab.diffusion.registries import BACKBONES
from netlab.diffusion.unet import ResBlock, conv, group_norm
from netlab.errors import UserError
from netlab.nn import layers
from netlab.nn.attention import Attention
from netlab.nn.precision import island_dtype
from netlab.registry import check_range
from netlab.sharding import axes


class UViTBlock(nn.Module):
    """x += g1 * Drop(Attn(mod(LN x))); x += g2 * Drop(MLP(mod(LN x))); shift/scale/gate from c by
    a zero-initialised linear layer (adaLN-Zero). Dropout is the paper's low-resolution dropout."""

    width: int
    num_heads: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c, train: bool = False):
        mod = layers.dense(
            6 * self.width,
            axes.EMBED,
            axes.MLP,
            island_dtype(self.dtype),
            kernel_init=layers.zeros,
            name="adaLN",
        )(nn.silu(c))
        s1, sc1, g1, s2, sc2, g2 = jnp.split(mod.astype(self.dtype), 6, axis=-1)
        drop = nn.Dropout(self.dropout, deterministic=not train)
        h = layers.modulate(layers.layer_norm(self.dtype, False, "ln1")(x), s1, sc1)
        x = x + g1[:, None] * drop(Attention(self.num_heads, self.dtype, name="attn")(h))
        h = layers.modulate(layers.layer_norm(self.dtype, False, "ln2")(x), s2, sc2)
        h = layers.Mlp(4 * self.width, self.dtype, name="mlp")(h)
        return x + g2[:, None] * drop(h)


class UViT(nn.Module):
    image_size: int
    channels: int
    width: int = 64  # conv width of the first level
    channel_mult: Sequence[int] = (1,)  # one conv level per entry, each followed by a 2x down
    num_res_blocks: int = 2
    vit_width: int = 128
    depth: int = 4  # Transformer blocks at the lowest resolution
    num_heads: int = 4
    dropout: float = 0.1  # low-resolution (Transformer) blocks only
    num_classes: int = 0
    dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        fdt = island_dtype(self.dtype)
        res_block, vit_block = ResBlock, UViTBlock
        if self.remat_policy is not None:
            res_block = nn.remat(ResBlock, policy=self.remat_policy)
            vit_block = nn.remat(UViTBlock, policy=self.remat_policy, static_argnums=(3,))
        emb = layers.TimestepEmbedder(4 * self.width, name="t_embed")(noise_cond)
        if self.num_classes:
            table = self.param(
                "label_embed",
                axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                (self.num_classes + 1, 4 * self.width),
                fdt,
            )
            emb = emb + table[labels]
        h = conv(self.width * self.channel_mult[0], self.dtype, "conv_in")(x.astype(self.dtype))
        skips = []
        for lvl, mult in enumerate(self.channel_mult):
            for i in range(self.num_res_blocks):
                h = res_block(mult * self.width, dtype=self.dtype, name=f"down{lvl}_{i}")(h, emb)
                skips.append(h)
            h = res_block(
                mult * self.width, resample="down", dtype=self.dtype, name=f"down{lvl}_pool"
            )(h, emb)
        b, g, _, ch = h.shape
        tokens = layers.dense(self.vit_width, axes.CONV_OUT, axes.EMBED, self.dtype, name="to_vit")
        t = tokens(h.reshape(b, g * g, ch)) + layers.sincos_2d(g, self.vit_width).astype(self.dtype)
        for i in range(self.depth):
            t = vit_block(self.vit_width, self.num_heads, self.dropout, self.dtype, name=f"vit{i}")(
                t, emb, train
            )
        h = layers.dense(ch, axes.EMBED, axes.CONV_OUT, self.dtype, name="from_vit")(t)
        h = h.reshape(b, g, g, ch)
        for lvl, mult in reversed(list(enumerate(self.channel_mult))):
            h = res_block(mult * self.width, resample="up", dtype=self.dtype, name=f"up{lvl}_up")(
                h, emb
            )
            for i in range(self.num_res_blocks):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res_block(mult * self.width, dtype=self.dtype, name=f"up{lvl}_{i}")(h, emb)
        h = nn.silu(group_norm(h.shape[-1], self.dtype, "norm_out")(h)).astype(self.dtype)
        return conv(self.channels, self.dtype, "conv_out", zero=True)(h).astype(fdt)


@BACKBONES.register("uvit")
def build(m, *, data_shape, num_classes, policy) -> UViT:
    """U-ViT from `config.model`: width, channel_mult, num_res_blocks (conv stages), vit_width,
    depth, num_heads (Transformer), dropout (Transformer blocks only)."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise UserError(
            f"model.backbone='uvit' needs square images (H, H, C), not data of shape "
            f"{tuple(data_shape)}; choose model.backbone='mlp' for vectors"
        )
    if m.get("learn_logvar", False):
        raise UserError("model.learn_logvar=True: U-ViT has no log-variance head; set it to False")
    width = check_range("model.width", int(m.get("width", 64)), 1, integer=True)
    mult = tuple(int(k) for k in m.get("channel_mult", (1,)))
    if not mult or min(mult) < 1 or any(width * k % 32 for k in mult):
        raise UserError(
            f"model.channel_mult={mult} with model.width={width}: expected positive integers "
            f"whose products with the width are multiples of 32 (GroupNorm), e.g. (1,)"
        )
    size = int(data_shape[0])
    if size % 2 ** len(mult):
        raise UserError(
            f"model.channel_mult={mult}: {len(mult)} conv levels halve the image "
            f"{len(mult)} times; {size} is not divisible by {2 ** len(mult)}; shorten it"
        )
    vit_width = check_range("model.vit_width", int(m.get("vit_width", 128)), 4, integer=True)
    heads = check_range("model.num_heads", int(m.get("num_heads", 4)), 1, integer=True)
    if vit_width % 4 or vit_width % heads:
        raise UserError(
            f"model.vit_width={vit_width} must be a multiple of 4 (2-D sin-cos positions) "
            f"and of model.num_heads={heads}"
        )
    return UViT(
        image_size=size,
        channels=int(data_shape[2]),
        width=width,
        channel_mult=mult,
        num_res_blocks=check_range(
            "model.num_res_blocks", int(m.get("num_res_blocks", 2)), 1, integer=True
        ),
        vit_width=vit_width,
        depth=check_range("model.depth", int(m.get("depth", 4)), 0, integer=True),
        num_heads=heads,
        dropout=check_range("model.dropout", float(m.get("dropout", 0.1)), 0.0, 1.0),
        num_classes=num_classes,
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )

"""DiC: a pure Conv3x3 diffusion backbone.

Tian et al. 2025, "DiC: Rethinking Conv3x3 Designs in Diffusion Models" (CVPR 2025): no
attention anywhere, only 3 x 3 convolutions, made to scale by

- an encoder-decoder *hourglass* over three resolutions with widths (1, 2, 4, 2, 1) x `width`
  (encoder level 0, level 1, middle, decoder level 1, level 0); down = conv3 to C/4 then
  PixelUnshuffle(2), up = conv3 to 4C then PixelShuffle(2);
- *sparse skip connections*: one skip every three blocks instead of one per block; the encoder
  stores the output of blocks i with (n - 1 - i) % 3 == 0 and the decoder concatenates them, last
  stored first, at its blocks i with i % 3 == 0;
- *stage-specific conditioning embeddings*: each resolution level has its own timestep MLP and
  class table; the decoder reuses its level's; label dropout is one decision per
  example, made by the task (the null class), so every level sees the same choice;
- *conditional gating*: every block is h = conv0(GELU(GN(x))), (g, s, b) = Linear(SiLU(c)),
  h = conv1(Dropout(GELU(GN(h)(1 + s) + b))), out = g * h + skip(x): the condition modulates the
  middle of the block (adaLN-style, "mid-block injection") and gates its output;
- the head: conv3, LayerNorm without affine modulated by the level-0 condition, a zero-initialised
  conv3 to the image channels.

GroupNorm has min(32, C/4) groups. As in the authors' code the block gates and modulations start
random (their `initialize_weights` zeroes only the head), so the network is not the identity at
initialisation. DiC works on 4 x 32 x 32 latents; at digits scale it runs on the 8 x 8 pixels.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from netlab.diffusion.registries import BACKBONES
from netlab.diffusion.unet import conv
from netlab.errors import UserError
from netlab.nn import layers
from netlab.nn.precision import island_dtype
from netlab.registry import check_range
from netlab.sharding import axes


def pixel_unshuffle(x, r: int = 2):
    """(B, H, W, C) -> (B, H/r, W/r, r*r*C), each r x r block's pixels stacked on channels."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // r, r, w // r, r, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // r, w // r, r * r * c)


def pixel_shuffle(x, r: int = 2):
    """The inverse of `pixel_unshuffle`: (B, H, W, r*r*C) -> (B, r*H, r*W, C)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, r, r, c // (r * r)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * r, w * r, c // (r * r))


def _group_norm(c, dtype, name):
    return nn.GroupNorm(num_groups=max(1, min(32, c // 4)), epsilon=1e-6, dtype=dtype, name=name)


def skip_slots(n: int, encoder: bool) -> list:
    """Blocks of a level of n blocks that store (encoder) or take (decoder) a sparse skip."""
    return [i for i in range(n) if ((n - 1 - i) if encoder else i) % 3 == 0]


class DiCBlock(nn.Module):
    """Conv3x3 block with mid-block conditioning and a conditional output gate."""

    out: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c, train: bool = False):
        fdt = island_dtype(self.dtype)
        h = nn.gelu(_group_norm(x.shape[-1], fdt, "norm0")(x)).astype(self.dtype)
        h = conv(self.out, self.dtype, "conv0")(h)
        mod = layers.dense(3 * self.out, axes.EMBED, axes.CONV_OUT, fdt, name="gate")(nn.silu(c))
        g, s, b = jnp.split(mod[:, None, None, :], 3, axis=-1)
        h = _group_norm(self.out, fdt, "norm1")(h) * (1 + s) + b
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(h).astype(self.dtype))
        h = conv(self.out, self.dtype, "conv1")(h)
        if x.shape[-1] != self.out:
            x = conv(self.out, self.dtype, "skip", kernel=1)(x.astype(self.dtype))
        return g.astype(self.dtype) * h + x.astype(self.dtype)


class DiC(nn.Module):
    image_size: int
    channels: int
    width: int = 64
    depths: Sequence[int] = (2, 2, 2, 2, 2)  # encoder 0, encoder 1, middle, decoder 1, decoder 0
    dropout: float = 0.0
    num_classes: int = 0
    dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        fdt = island_dtype(self.dtype)
        block = DiCBlock
        if self.remat_policy is not None:
            block = nn.remat(DiCBlock, policy=self.remat_policy, static_argnums=(3,))
        widths = [self.width * k for k in (1, 2, 4, 2, 1)]
        conds = []
        for lvl in range(3):  # stage-specific embeddings
            c = layers.TimestepEmbedder(widths[lvl], name=f"t_embed{lvl}")(noise_cond)
            if self.num_classes:
                table = self.param(
                    f"label_embed{lvl}",
                    axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                    (self.num_classes + 1, widths[lvl]),
                    fdt,
                )
                c = c + table[labels]
            conds.append(c)
        h = conv(widths[0], self.dtype, "conv_in")(x.astype(self.dtype))
        skips = []
        for stage, lvl in enumerate((0, 1, 2, 1, 0)):
            n, encoder = self.depths[stage], stage < 2
            if stage in (1, 2):  # down: conv3 to C/4, PixelUnshuffle(2)
                h = pixel_unshuffle(conv(widths[stage] // 4, self.dtype, f"down{stage}")(h))
            if stage in (3, 4):  # up: conv3 to 4C, PixelShuffle(2)
                h = pixel_shuffle(conv(4 * widths[stage], self.dtype, f"up{stage}")(h))
            stores, takes = skip_slots(n, True), skip_slots(n, False)
            for i in range(n):
                if stage > 2 and i in takes:
                    h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = block(widths[stage], self.dropout, self.dtype, name=f"stage{stage}_{i}")(
                    h, conds[lvl], train
                )
                if encoder and i in stores:
                    skips.append(h)
        h = conv(widths[0], self.dtype, "head_conv")(h)
        mod = layers.dense(2 * widths[0], axes.EMBED, axes.CONV_OUT, fdt, name="head_adaLN")(
            nn.silu(conds[0])
        )
        shift, scale = jnp.split(mod[:, None, None, :], 2, axis=-1)
        h = layers.layer_norm(fdt, affine=False, name="head_ln")(h) * (1 + scale) + shift
        return conv(self.channels, self.dtype, "conv_out", zero=True)(h.astype(self.dtype)).astype(
            fdt
        )


@BACKBONES.register("dic")
def build(m, *, data_shape, num_classes, policy) -> DiC:
    """DiC from `config.model`: width (level-0 channels), dic_depths (five block counts: encoder
    0, encoder 1, middle, decoder 1, decoder 0), dropout."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1] or data_shape[0] % 4:
        raise UserError(
            f"model.backbone='dic' needs square images (H, H, C) with H divisible by 4 (two "
            f"2x downsamplings), not data of shape {tuple(data_shape)}"
        )
    if m.get("learn_logvar", False):
        raise UserError("model.learn_logvar=True: DiC has no log-variance head; set it to False")
    width = check_range("model.width", int(m.get("width", 64)), 4, integer=True)
    if width % 4:
        raise UserError(f"model.width={width}: DiC's down/up convs need a multiple of 4")
    depths = tuple(int(k) for k in m.get("dic_depths", (2, 2, 2, 2, 2)))
    if len(depths) != 5 or min(depths) < 1:
        raise UserError(
            f"model.dic_depths={depths}: expected five block counts >= 1 (encoder 0, encoder 1, "
            f"middle, decoder 1, decoder 0), e.g. (2, 2, 2, 2, 2)"
        )
    for enc, dec in ((0, 4), (1, 3)):
        if len(skip_slots(depths[enc], True)) != len(skip_slots(depths[dec], False)):
            raise UserError(
                f"model.dic_depths={depths}: encoder and decoder of a level need as many "
                f"sparse skips (one per 3 blocks); give entries {enc} and {dec} equal values"
            )
    return DiC(
        image_size=int(data_shape[0]),
        channels=int(data_shape[2]),
        width=width,
        depths=depths,
        dropout=check_range("model.dropout", float(m.get("dropout", 0.0)), 0.0, 1.0),
        num_classes=num_classes,
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )

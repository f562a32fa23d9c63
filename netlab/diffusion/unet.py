"""ADM-style U-Net backbone (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image
Synthesis", Sec. 3 and Table 1; building on Ho et al. 2020, Appendix B).

Residual blocks of GroupNorm-SiLU-Conv with the noise/class embedding injected by adaptive group
norm, `GN(h) * (1 + scale) + shift` ("AdaGN", Sec. 3, Eq. in the text), BigGAN-style residual
down/up sampling, multi-head self-attention at the listed resolutions, skip connections from every
encoder block to the decoder, and zero-initialised last convolutions so each residual block starts
as the identity. Same call signature as `dit.DiT`: `(x, noise_cond, labels) -> output` with x in
NHWC, noise_cond float32 (B,), labels in [0, num_classes] (the last row is the CFG null label).
With `remat_policy` every residual and attention block is rematerialised (`train.remat`).
Registered as `model.backbone="unet"`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from netlab.diffusion.registries import BACKBONES
from netlab.errors import UserError
from netlab.nn import layers
from netlab.nn.precision import island_dtype
from netlab.sharding import axes


def conv(features, dtype, name, kernel=3, zero=False, stride=1):
    init = layers.zeros if zero else nn.initializers.lecun_normal()
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        dtype=dtype,
        name=name,
        kernel_init=axes.param(init, None, None, axes.CONV_IN, axes.CONV_OUT),
        bias_init=axes.param(layers.zeros, axes.CONV_OUT),
    )


def group_norm(channels, dtype, name, eps=1e-6):
    groups = min(32, channels)
    if channels % groups:
        raise ValueError(
            f"U-Net width {channels} is not divisible by {groups} norm groups; use a multiple of 32"
        )
    return nn.GroupNorm(
        num_groups=groups,
        epsilon=eps,
        dtype=island_dtype(dtype),
        name=name,
        scale_init=axes.param(nn.initializers.ones, axes.NORM),
        bias_init=axes.param(layers.zeros, axes.NORM),
    )


def _resample(x, mode):
    """Nearest-neighbour x2 upsampling or 2x2 average pooling (ADM's conv-free resampling)."""
    if mode == "up":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ResBlock(nn.Module):
    """GN-SiLU-(resample)-Conv, AdaGN(emb), SiLU-Conv(zero init); 1x1 skip when widths differ."""

    out: int
    resample: str = "none"  # "none" | "up" | "down"
    dtype: Any = jnp.float32
    norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, x, emb):
        h = group_norm(x.shape[-1], self.dtype, "norm1", self.norm_eps)(x)
        h = nn.silu(h).astype(self.dtype)
        if self.resample != "none":
            h, x = _resample(h, self.resample), _resample(x, self.resample)
        h = conv(self.out, self.dtype, "conv1")(h)
        mod = layers.dense(
            2 * self.out, axes.EMBED, axes.CONV_OUT, island_dtype(self.dtype), name="emb"
        )(nn.silu(emb))
        scale, shift = jnp.split(mod[:, None, None, :], 2, axis=-1)
        h = group_norm(self.out, self.dtype, "norm2", self.norm_eps)(h) * (1 + scale) + shift
        h = conv(self.out, self.dtype, "conv2", zero=True)(nn.silu(h).astype(self.dtype))
        if x.shape[-1] != self.out:
            x = conv(self.out, self.dtype, "skip", kernel=1)(x.astype(self.dtype))
        return x.astype(self.dtype) + h


class AttnBlock(nn.Module):
    """Pre-norm multi-head self-attention over the H*W positions, residual."""

    num_heads: int
    dtype: Any = jnp.float32
    norm_eps: float = 1e-6
    norm: bool = True  # False: no GroupNorm (diffusers' mid-block attention under scale_shift)

    @nn.compact
    def __call__(self, x):
        b, hgt, wid, c = x.shape
        h = group_norm(c, self.dtype, "norm", self.norm_eps)(x) if self.norm else x
        h = h.astype(self.dtype).reshape(b, hgt * wid, c)
        h = layers.Attention(self.num_heads, self.dtype, name="attn")(h)
        return x + h.reshape(b, hgt, wid, c)


class UNet(nn.Module):
    image_size: int
    channels: int
    width: int = 64
    channel_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (8,)
    num_heads: int = 4
    num_classes: int = 0
    learn_logvar: bool = False
    dtype: Any = jnp.float32
    remat_policy: Any = None
    # For diffusers' UNet2DModel in ADM layout (`netlab.convert.unet`); the defaults keep ADM's.
    freq_dim: int = 256  # sinusoidal timestep features (diffusers: block_out_channels[0])
    norm_eps: float = 1e-6  # every GroupNorm's eps (diffusers: norm_eps, 1e-5)
    mid_attn_norm: bool = True  # GroupNorm before the middle attention

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        levels = len(self.channel_mult)
        eps = self.norm_eps
        fdt = island_dtype(self.dtype)
        res_block, attn_block = ResBlock, AttnBlock
        if self.remat_policy is not None:
            res_block = nn.remat(ResBlock, policy=self.remat_policy)
            attn_block = nn.remat(AttnBlock, policy=self.remat_policy)
        if self.image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"image size {self.image_size} is not divisible by 2^{levels - 1} for "
                f"{levels} U-Net levels; shorten channel_mult or pad the images"
            )
        emb = layers.TimestepEmbedder(4 * self.width, self.freq_dim, name="t_embed")(noise_cond)
        if self.num_classes:
            table = self.param(
                "label_embed",
                axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                (self.num_classes + 1, 4 * self.width),
                fdt,
            )
            emb = emb + table[labels]
        h = conv(self.width, self.dtype, "conv_in")(x.astype(self.dtype))
        skips, res = [h], self.image_size
        for lvl, mult in enumerate(self.channel_mult):
            for i in range(self.num_res_blocks):
                h = res_block(
                    mult * self.width, dtype=self.dtype, norm_eps=eps, name=f"down{lvl}_{i}"
                )(h, emb)
                if res in self.attention_resolutions:
                    h = attn_block(self.num_heads, self.dtype, eps, name=f"down{lvl}_{i}_attn")(h)
                skips.append(h)
            if lvl < levels - 1:
                h = res_block(
                    mult * self.width,
                    resample="down",
                    dtype=self.dtype,
                    norm_eps=eps,
                    name=f"down{lvl}_pool",
                )(h, emb)
                skips.append(h)
                res //= 2
        h = res_block(h.shape[-1], dtype=self.dtype, norm_eps=eps, name="mid1")(h, emb)
        h = attn_block(self.num_heads, self.dtype, eps, self.mid_attn_norm, name="mid_attn")(h)
        h = res_block(h.shape[-1], dtype=self.dtype, norm_eps=eps, name="mid2")(h, emb)
        for lvl, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res_block(
                    mult * self.width, dtype=self.dtype, norm_eps=eps, name=f"up{lvl}_{i}"
                )(h, emb)
                if res in self.attention_resolutions:
                    h = attn_block(self.num_heads, self.dtype, eps, name=f"up{lvl}_{i}_attn")(h)
            if lvl > 0:
                h = res_block(
                    mult * self.width,
                    resample="up",
                    dtype=self.dtype,
                    norm_eps=eps,
                    name=f"up{lvl}_upsample",
                )(h, emb)
                res *= 2
        h = nn.silu(group_norm(h.shape[-1], self.dtype, "norm_out", eps)(h)).astype(self.dtype)
        out = conv(self.channels, self.dtype, "conv_out", zero=True)(h).astype(fdt)
        if not self.learn_logvar:
            return out
        logvar = layers.dense(1, axes.EMBED, None, fdt, kernel_init=layers.zeros, name="logvar")(
            emb
        )[:, 0]
        return out, logvar


@BACKBONES.register("unet")
def build(m, *, data_shape, num_classes, policy) -> UNet:
    """ADM U-Net from `config.model` (width, channel_mult, num_res_blocks, attention_resolutions,
    num_heads, learn_logvar) for square images `data_shape` = (H, W, C)."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise UserError(
            f"model.backbone='unet' needs square images (H, H, C), not data of shape "
            f"{tuple(data_shape)}; choose model.backbone='mlp' for vectors"
        )
    width, heads = int(m.get("width", 64)), int(m.get("num_heads", 4))
    mult = tuple(int(k) for k in m.get("channel_mult", (1, 2, 2)))
    if not mult or min(mult) < 1:
        raise UserError(f"model.channel_mult={mult}: expected positive integers, e.g. (1, 2, 2)")
    if width < 1 or width % 32:
        raise UserError(
            f"model.width={width}: the U-Net's GroupNorm has 32 groups; use a multiple of 32"
        )
    if heads < 1 or width % heads:
        raise UserError(f"model.num_heads={heads} must divide model.width={width}")
    if data_shape[0] % 2 ** (len(mult) - 1):
        raise UserError(
            f"model.channel_mult={mult}: {len(mult)} levels need an image size "
            f"divisible by {2 ** (len(mult) - 1)}, not {data_shape[0]}; shorten it"
        )
    return UNet(
        image_size=int(data_shape[0]),
        channels=int(data_shape[2]),
        width=width,
        channel_mult=mult,
        num_res_blocks=int(m.get("num_res_blocks", 2)),
        attention_resolutions=tuple(m.get("attention_resolutions", (8,))),
        num_heads=heads,
        num_classes=num_classes,
        learn_logvar=bool(m.get("learn_logvar", False)),
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )

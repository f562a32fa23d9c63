"""diffusers `UNet2DModel` weights -> `netlab.diffusion.unet.UNet`, where the two correspond.

netlab's U-Net is ADM's (Dhariwal & Nichol 2021): residual blocks with AdaGN (GN(h)(1 + scale) +
shift), residual blocks that resample (average pooling down, nearest-neighbour up, BigGAN style),
attention at whole resolutions on both paths, a middle block res-attn-res. A `UNet2DModel` is
that network exactly when it is built with
  `resnet_time_scale_shift="scale_shift"`, `down_block_types` from `ResnetDownsampleBlock2D` /
  `AttnDownBlock2D` and `up_block_types` from `ResnetUpsampleBlock2D` / `AttnUpBlock2D` (with
  `downsample_type="resnet"`, `upsample_type="resnet"`), attention at the same levels on both
  paths, one head count for every attention (`attention_head_dim=None` gives 1), 32 norm groups,
  `block_out_channels` multiples of the first, positional timestep features with
  `flip_sin_to_cos=True`, `freq_shift=0`, no `time_embedding_dim` override, `class_embed_type=None`.
The result sets netlab's `freq_dim=block_out_channels[0]`, `norm_eps` and `mid_attn_norm=False`
(under scale_shift diffusers' middle attention has no GroupNorm).

What does not map, and why (one-line errors name the key): DDPM-style models — the default
`UNet2DModel` and google/ddpm-* checkpoints — add the time embedding (`time_emb_proj` of width C,
"default" shift) and resample with convolutions (`downsamplers.0.conv`, `upsamplers.0.conv`):
different functions from ADM's AdaGN and residual resampling, so no weights make netlab's U-Net
compute them. Also unconvertible: Fourier time features, `center_input_sample` (not visible in a
state dict; leave it False), and block types with other structure (skip / K-blocks).
Learned-sigma outputs (2C): the first C channels (eps) are kept.
"""

from __future__ import annotations

import numpy as np

from netlab.convert.core import Converted, Keys, linear
from netlab.errors import UserError

FIX = "give a diffusers UNet2DModel in ADM layout (docs/convert.md lists what maps)"


def _conv(keys, prefix, out=None, inp=None, k=None):
    w = keys.take(f"{prefix}.weight", (out, inp, k, k))
    return {
        "kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
        "bias": keys.take(f"{prefix}.bias", (w.shape[0],)),
    }


def _norm(keys, prefix, c):
    return {"scale": keys.take(f"{prefix}.weight", (c,)), "bias": keys.take(f"{prefix}.bias", (c,))}


def _res(keys, p, cin, cout, temb):
    if f"{p}.time_emb_proj.weight" in keys and keys.shape(f"{p}.time_emb_proj.weight")[0] == cout:
        raise UserError(
            f"diffusers UNet2DModel state dict: key '{p}.time_emb_proj.weight' has {cout} rows: "
            "the additive ('default') time embedding of DDPM's block; netlab's U-Net is ADM's "
            "AdaGN (resnet_time_scale_shift='scale_shift', 2 x channels rows)"
        )
    d = {
        "norm1": _norm(keys, f"{p}.norm1", cin),
        "conv1": _conv(keys, f"{p}.conv1", cout, cin, 3),
        "emb": linear(keys, f"{p}.time_emb_proj", 2 * cout, temb, bias=True),
        "norm2": _norm(keys, f"{p}.norm2", cout),
        "conv2": _conv(keys, f"{p}.conv2", cout, cout, 3),
    }
    if cin != cout:
        d["skip"] = _conv(keys, f"{p}.conv_shortcut", cout, cin, 1)
    return d


def _attn(keys, p, c, heads, norm=True):
    ws = [linear(keys, f"{p}.to_{n}", c, c, bias=True) for n in "qkv"]
    hd = c // heads
    out = linear(keys, f"{p}.to_out.0", c, c, bias=True)
    d = {
        "attn": {
            "qkv": np.stack([w["kernel"].reshape(c, heads, hd) for w in ws], axis=1),
            "qkv_bias": np.stack([w["bias"].reshape(heads, hd) for w in ws]),
            "out": out["kernel"].reshape(heads, hd, c),
            "out_bias": out["bias"],
        }
    }
    if norm:
        d["norm"] = _norm(keys, f"{p}.group_norm", c)
    return d


def _resampler(keys, p, kind):
    if f"{p}.conv.weight" in keys:
        raise UserError(
            f"diffusers UNet2DModel state dict: key '{p}.conv.weight' is a convolutional "
            f"{kind}sampler (DDPM's); netlab's U-Net resamples in a residual block (ADM): build "
            f"the model with Resnet{kind.capitalize()}sample blocks / {kind}sample_type='resnet'"
        )


def convert(
    state_dict,
    *,
    image_size: int = 0,
    num_heads: int = 1,
    norm_eps: float = 1e-5,
) -> Converted:
    """`UNet2DModel` (ADM layout) -> netlab `UNet`. Not in a state dict: `image_size` (config
    sample_size; needed for the attention resolutions), `num_heads` (channels /
    attention_head_dim; 1 for attention_head_dim=None), `norm_eps` (default 1e-5)."""
    k = Keys(state_dict, "diffusers UNet2DModel state dict", FIX)
    if not image_size:
        raise UserError(
            "unet: image_size is not in a state dict; pass image_size=<the model's sample_size>"
        )
    conv_in = _conv(k, "conv_in", None, None, 3)
    width, channels = conv_in["kernel"].shape[3], conv_in["kernel"].shape[2]
    temb = 4 * width
    levels = 0
    while any(key.startswith(f"down_blocks.{levels}.") for key in k.sd):
        levels += 1
    n_res = 0  # layers_per_block
    while f"down_blocks.0.resnets.{n_res}.conv1.weight" in k:
        n_res += 1
    mult, params = [], {"conv_in": conv_in}
    params["t_embed"] = {
        "fc1": linear(k, "time_embedding.linear_1", temb, width, bias=True),
        "fc2": linear(k, "time_embedding.linear_2", temb, temb, bias=True),
    }
    num_classes = 0
    if "class_embedding.weight" in k:
        params["label_embed"] = k.take("class_embedding.weight", (None, temb))
        num_classes = params["label_embed"].shape[0] - 1
    c, res, attn_res, skips = width, image_size, [], [width]
    for lvl in range(levels):
        cout = k.shape(f"down_blocks.{lvl}.resnets.0.conv1.weight")[0]
        if cout % width:
            raise UserError(
                f"diffusers UNet2DModel state dict: key 'down_blocks.{lvl}.resnets.0.conv1.weight'"
                f" has {cout} output channels, not a multiple of block_out_channels[0]={width}"
            )
        mult.append(cout // width)
        has_attn = f"down_blocks.{lvl}.attentions.0.to_q.weight" in k
        if has_attn:
            attn_res.append(res)
        for i in range(n_res):
            p = f"down_blocks.{lvl}.resnets.{i}"
            params[f"down{lvl}_{i}"] = _res(k, p, c, cout, temb)
            c = cout
            if has_attn:
                params[f"down{lvl}_{i}_attn"] = _attn(
                    k, f"down_blocks.{lvl}.attentions.{i}", c, num_heads
                )
            skips.append(c)
        if lvl < levels - 1:
            _resampler(k, f"down_blocks.{lvl}.downsamplers.0", "down")
            params[f"down{lvl}_pool"] = _res(k, f"down_blocks.{lvl}.downsamplers.0", c, c, temb)
            skips.append(c)
            res //= 2
    params["mid1"] = _res(k, "mid_block.resnets.0", c, c, temb)
    mid_norm = "mid_block.attentions.0.group_norm.weight" in k
    params["mid_attn"] = _attn(k, "mid_block.attentions.0", c, num_heads, mid_norm)
    params["mid2"] = _res(k, "mid_block.resnets.1", c, c, temb)
    for j, lvl in enumerate(reversed(range(levels))):
        cout = mult[lvl] * width
        has_attn = f"up_blocks.{j}.attentions.0.to_q.weight" in k
        if has_attn != (res in attn_res):
            raise UserError(
                f"diffusers UNet2DModel state dict: up_blocks.{j} {'has' if has_attn else 'lacks'}"
                f" attention but down_blocks.{lvl} {'lacks' if has_attn else 'has'} it; netlab's "
                "U-Net attends at the same resolutions on both paths"
            )
        for i in range(n_res + 1):
            cin = c + skips.pop()
            params[f"up{lvl}_{i}"] = _res(k, f"up_blocks.{j}.resnets.{i}", cin, cout, temb)
            c = cout
            if has_attn:
                params[f"up{lvl}_{i}_attn"] = _attn(
                    k, f"up_blocks.{j}.attentions.{i}", c, num_heads
                )
        if lvl > 0:
            _resampler(k, f"up_blocks.{j}.upsamplers.0", "up")
            params[f"up{lvl}_upsample"] = _res(k, f"up_blocks.{j}.upsamplers.0", c, c, temb)
            res *= 2
    params["norm_out"] = _norm(k, "conv_norm_out", c)
    out = _conv(k, "conv_out", None, c, 3)
    params["conv_out"] = {
        "kernel": out["kernel"][..., :channels],
        "bias": out["bias"][:channels],
    }
    k.done()
    config = dict(
        image_size=int(image_size),
        channels=channels,
        width=width,
        channel_mult=tuple(mult),
        num_res_blocks=n_res,
        attention_resolutions=tuple(attn_res),
        num_heads=int(num_heads),
        num_classes=num_classes,
        freq_dim=width,
        norm_eps=float(norm_eps),
        mid_attn_norm=mid_norm,
    )
    notes = [
        "the network takes diffusers' integer timesteps: sample through "
        "netlab.diffusion.parameterization.timestep_denoiser(net, Schedule('linear'), 'eps')",
        f"num_heads={num_heads}, norm_eps={norm_eps} and 32 norm groups are not in a state "
        "dict: match the model's config (heads = channels / attention_head_dim)",
    ]
    if out["bias"].shape[0] != channels:
        notes.append(f"output channels {channels}..{out['bias'].shape[0] - 1} (sigma) dropped")
    if num_classes:
        notes.append(f"class {num_classes} (the last embedding row) is netlab's null label")
    return Converted(params, "netlab.diffusion.unet:UNet", config, notes=tuple(notes))


CONVERTERS = {"unet": convert}

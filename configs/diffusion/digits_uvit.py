"""Class-conditional digits on the conv/hybrid backbones: U-ViT (simple diffusion), DiC, DiMR,
and the ADM U-Net.

    python -m netlab.main --config configs/diffusion/digits_uvit.py:backbone=uvit \
        --workdir runs/digits_uvit
    python -m netlab.main --config configs/diffusion/digits_uvit.py:backbone=dic --workdir runs/dic
    python -m netlab.main --config configs/diffusion/digits_uvit.py:backbone=dimr \
        --workdir runs/dimr
    python -m netlab.main --config configs/diffusion/digits_uvit.py:backbone=unet \
        --workdir runs/digits_unet

Argument: backbone=uvit|dic|dimr|unet and a preset (cpu | gpu | pod). Everything else is
digits_dit's recipe (1500 steps of batch 128 on the CPU preset, v-prediction, DPM-Solver++
sampling).
- uvit (netlab/diffusion/uvit.py, Hoogeboom et al. 2023): ResBlock stage at 8 x 8, a Transformer
  on the 4 x 4 map with dropout 0.1 (the low-resolution blocks only), simple diffusion's
  multiscale loss over 8, 4 and 2 pixels (simple_diffusion.py) and its shifted cosine schedule:
  log-SNR + 2 ln(64 / 8) (Sec. 3.1, `schedules.shift_for_resolution(8)`).
- dic (netlab/diffusion/dic.py, Tian et al. 2025): a pure Conv3x3 hourglass over 8, 4 and 2
  pixels, widths (1, 2, 4, 2, 1) x 64, sparse skips, stage-specific embeddings, gated blocks.
- dimr (netlab/diffusion/dimr.py, Liu et al. 2024): a Transformer branch on 2 x 2 patches (a
  4 x 4 token grid) refined by a ConvNeXt branch at 8 x 8, time-dependent LayerNorm; each branch
  is supervised at its resolution (weights 1/4, 1; `model.dimr_branch_loss=0` trains the last).
- unet (netlab/diffusion/unet.py, the ADM U-Net of Dhariwal & Nichol 2021): 64 x (1, 2) channels
  over 8 x 8 and 4 x 4, 2 residual blocks per level, self-attention at 4 x 4.
"""

import math

from configs import common
from configs.diffusion import digits_dit

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = ("backbone=uvit", "backbone=dic", "backbone=dimr", "backbone=unet")
BACKBONES = ("uvit", "dic", "dimr", "unet")


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, backbone="uvit")
    if a.backbone not in BACKBONES:
        raise ValueError(f"backbone={a.backbone!r}: choose backbone=uvit|dic|dimr|unet")
    c = digits_dit.get_config(a.preset)
    m, d = c.model, c.diffusion
    m.backbone, m.variant, m.learn_logvar = a.backbone, "", False
    d.multiscale = ()  # simple diffusion's loss scales (image sides); () is the plain loss
    scale = 1 if a.preset == "cpu" else 2
    if a.backbone == "uvit":
        m.width, m.channel_mult, m.num_res_blocks = 64 * scale, (1,), 2
        m.vit_width, m.depth, m.num_heads, m.dropout = 128 * scale, 4, 4, 0.1
        d.multiscale = (8, 4, 2)
        d.schedule, d.shift = "cosine_shifted", 2 * math.log(64 / 8)
    elif a.backbone == "unet":
        m.width, m.channel_mult, m.num_res_blocks = 64 * scale, (1, 2), 2
        m.attention_resolutions, m.num_heads = (4,), 4
    elif a.backbone == "dic":
        m.width, m.dic_depths, m.dropout = 64 * scale, (2, 2, 2, 2, 2), 0.0
    else:
        m.width, m.depth, m.num_heads, m.patch = 128 * scale, 4, 4, 2
        m.dimr_conv_width, m.dimr_conv_depth, m.dimr_kernel = 64 * scale, 2, 7
        m.dimr_branch_loss = 0.25  # branch 1's own loss at 4 x 4 (the paper's 1/4); 0 = off
    return c

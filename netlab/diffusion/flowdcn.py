"""FlowDCN: a DiT whose attention is a multi-scale group-wise deformable convolution.

Wang et al. 2024, "FlowDCN: Exploring DCN-like Architectures for Fast Image Generation with
Arbitrary Resolution" (Sec. 3, Fig. 2; the authors' `src/models/flowdcn.py`). DiT's skeleton
(patchify, adaLN-Zero blocks, a final adaLN layer and linear unpatchify) with RMSNorm and a SwiGLU
MLP of hidden width floor(2/3 * 4 D), and in place of self-attention the MultiScaleDCN mixer on
the token grid:

    v = Linear(x)  (G groups),   Delta = Linear(x)  (zero-initialised; G x K offsets (dy, dx)),
    s_g = max_scale * sigmoid(Linear(x) + logit((g + 1)/G - 1e-4))  (one scale per group: the
          groups start at dilations max_scale/G, 2 max_scale/G, ..., max_scale),
    m = Linear(x)  (G x K un-normalised modulation scalars, DCNv4 style, no softmax),
    out = Linear( sum_k m_k bilinear(v_g, p0 + s_g (p_k + Delta_k)) )

with K = 3 x 3 points (`netlab.nn.deformable.deform_conv`). The paper's max_scale is 6 on a
16 x 16 token grid; a digits config uses less. There is no position embedding: every layer is
local (the deformable mixer) or per token, which is what lets FlowDCN run at resolutions it was
not trained at; the same parameters apply to any grid. Deliberate differences from the authors'
code: the modulation bias starts at 1/K (the mixer starts as a local average) rather than
PyTorch's default uniform draw; the learned-variance output half, which the flow model discards,
is not built; bilinear sampling zero-pads by floor, not by the Triton kernel's truncation; sampling
coordinates are float32 under bfloat16 compute.

The model is trained as a flow: `parameterization="flow"` and `weighting="flow"` of
`netlab.diffusion.flow` (configs/diffusion/digits_rin.py:backbone=flowdcn takes digits_flow's
objective). FlowDCN/SiT run time with t = 1 at the data; netlab's flow has t = 0 at the data and
feeds the network its usual noise conditioning, so no conversion is needed.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion.registries import BACKBONES
from netlab.errors import UserError
from netlab.nn import layers
from netlab.nn.deformable import deform_conv
from netlab.registry import check_range


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x) (Shazeer 2020), hidden floor(2/3 * 4 D) as in FlowDCN / LLaMA."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        hidden = int(2 * 4 * x.shape[-1] / 3)
        a = nn.Dense(hidden, dtype=self.dtype, kernel_init=layers.xavier, name="w1")(x)
        b = nn.Dense(hidden, dtype=self.dtype, kernel_init=layers.xavier, name="w3")(x)
        return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=layers.xavier, name="w2")(
            nn.silu(a) * b
        )


class MultiScaleDCN(nn.Module):
    """FlowDCN's token mixer on a (B, H, W, D) grid."""

    groups: int = 4
    kernel_size: int = 3
    max_scale: float = 6.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        g, k, d = self.groups, self.kernel_size**2, x.shape[-1]
        dense = functools.partial(nn.Dense, dtype=self.dtype)
        v = dense(d, name="value", kernel_init=layers.xavier)(x)
        offsets = dense(g * k * 2, name="offset", kernel_init=layers.zeros)(x)
        cdt = jnp.promote_types(self.dtype, jnp.float32)  # coordinates: at least float32
        offsets = offsets.reshape(*x.shape[:3], g, k, 2).astype(cdt)
        prior = np.asarray([math.log(p / (1 - p)) for p in ((i + 1) / g - 1e-4 for i in range(g))])
        scale = self.max_scale * jax.nn.sigmoid(
            dense(g, name="scale", kernel_init=layers.zeros)(x).astype(cdt)
            + jnp.asarray(prior, cdt)
        )
        mask = dense(
            g * k, name="mask", kernel_init=layers.zeros, bias_init=nn.initializers.constant(1 / k)
        )(x)
        out = deform_conv(
            v,
            offsets,
            mask.reshape(*x.shape[:3], g, k),
            kernel_size=self.kernel_size,
            scale=scale,
        )
        return dense(d, name="out", kernel_init=layers.xavier)(out.astype(self.dtype))


class FlowDCNBlock(nn.Module):
    """adaLN-Zero: x += g1 MSDCN(mod(RMSNorm x)); x += g2 SwiGLU(mod(RMSNorm x))."""

    groups: int
    kernel_size: int
    max_scale: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c):
        d = x.shape[-1]
        mod = nn.Dense(6 * d, kernel_init=layers.zeros, name="adaLN")(nn.silu(c))
        s1, sc1, g1, s2, sc2, g2 = [
            a[:, None, None] for a in jnp.split(mod.astype(self.dtype), 6, -1)
        ]
        norm = functools.partial(nn.RMSNorm, 1e-6, self.dtype, use_scale=False)
        h = norm(name="norm1")(x) * (1 + sc1) + s1
        mixer = MultiScaleDCN(self.groups, self.kernel_size, self.max_scale, self.dtype, name="dcn")
        x = x + g1 * mixer(h)
        h = norm(name="norm2")(x) * (1 + sc2) + s2
        return x + g2 * SwiGLU(self.dtype, name="mlp")(h)


class FlowDCN(nn.Module):
    image_size: int
    channels: int
    patch: int = 2
    width: int = 128
    depth: int = 4
    groups: int = 4
    kernel_size: int = 3
    max_scale: float = 6.0
    num_classes: int = 0  # 0: unconditional
    dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        """x: (B, H, W, C) with H, W multiples of the patch (any size: no position embedding)."""
        fdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        b, hh, ww, _ = x.shape
        p = self.patch
        h = nn.Conv(self.width, (p, p), strides=(p, p), dtype=self.dtype, name="patchify")(
            x.astype(self.dtype)
        )
        c = layers.TimestepEmbedder(self.width, name="t_embed")(noise_cond)
        if self.num_classes:
            table = self.param(
                "label_embed", nn.initializers.normal(0.02), (self.num_classes + 1, self.width), fdt
            )
            c = c + table[labels]
        block = FlowDCNBlock
        if self.remat_policy is not None:
            block = nn.remat(FlowDCNBlock, policy=self.remat_policy)
        for i in range(self.depth):
            h = block(self.groups, self.kernel_size, self.max_scale, self.dtype, name=f"block{i}")(
                h, c
            )
        mod = nn.Dense(2 * self.width, kernel_init=layers.zeros, name="final_adaLN")(nn.silu(c))
        shift, scale = [a[:, None, None].astype(self.dtype) for a in jnp.split(mod, 2, -1)]
        h = (
            nn.RMSNorm(1e-6, self.dtype, use_scale=False, name="final_norm")(h) * (1 + scale)
            + shift
        )
        h = nn.Dense(
            p * p * self.channels, dtype=self.dtype, kernel_init=layers.zeros, name="final"
        )(h)
        gy, gx = hh // p, ww // p
        out = h.reshape(b, gy, gx, p, p, self.channels).transpose(0, 1, 3, 2, 4, 5)
        return out.reshape(b, hh, ww, self.channels).astype(fdt)


@BACKBONES.register("flowdcn")
def build(m, *, data_shape, num_classes, policy) -> FlowDCN:
    """FlowDCN from `config.model`: patch, width, depth, dcn_groups (4), dcn_kernel (3),
    dcn_max_scale (6, the paper's)."""
    if len(data_shape) != 3:
        raise UserError(
            f"model.backbone='flowdcn' needs images (H, W, C), not data of shape "
            f"{tuple(data_shape)}; choose model.backbone='mlp' for vectors"
        )
    if m.get("learn_logvar", False):
        raise UserError(
            "model.learn_logvar=True: FlowDCN has no log-variance head; set it to False"
        )
    patch = check_range("model.patch", int(m.get("patch", 2)), 1, integer=True)
    if data_shape[0] % patch or data_shape[1] % patch:
        raise UserError(
            f"model.patch={patch} does not divide the image size {tuple(data_shape[:2])}"
        )
    width = check_range("model.width", int(m.get("width", 128)), 1, integer=True)
    groups = check_range("model.dcn_groups", int(m.get("dcn_groups", 4)), 1, integer=True)
    if width % groups:
        raise UserError(f"model.dcn_groups={groups} must divide model.width={width}")
    kernel = int(m.get("dcn_kernel", 3))
    if kernel < 1 or kernel % 2 == 0:
        raise UserError(f"model.dcn_kernel={kernel}: expected an odd kernel size, e.g. 3")
    return FlowDCN(
        image_size=int(data_shape[0]),
        channels=int(data_shape[2]),
        patch=patch,
        width=width,
        depth=check_range("model.depth", int(m.get("depth", 4)), 1, integer=True),
        groups=groups,
        kernel_size=kernel,
        max_scale=check_range("model.dcn_max_scale", float(m.get("dcn_max_scale", 6.0)), 0.0),
        num_classes=num_classes,
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )

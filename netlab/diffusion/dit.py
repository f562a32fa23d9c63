"""DiT: a Transformer on image patches with adaLN-Zero conditioning.

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers": patchify (Sec. 3.2), DiT
blocks with adaLN-Zero (Fig. 3: shift/scale/gate regressed from the timestep + class embedding,
initialised to zero so every block starts as the identity; `netlab.nn.blocks.AdaLNZeroBlock`),
fixed 2-D sin-cos positions, and presets S/B/L/XL (Table 1) with patch sizes 2/4/8. The class
table holds one extra "null" row for classifier-free guidance (label dropout happens in the loss).
With `learn_logvar` the model also returns EDM2's per-example log-variance u(noise) for the
uncertainty-weighted loss.

The block's MLP is an argument: the dense `netlab.nn.layers.Mlp` by default, and `sparse_mlp` (a
factory, e.g. an MoE layer: DiT-MoE, Fei et al. 2024, Sec. 3.1) in every `sparse_every`-th block
(blocks i with i % sparse_every == sparse_every - 1). A sparse MLP's auxiliary losses go to the
`netlab.nn.aux` collections, which the diffusion task sums into its loss.

With `pipeline_microbatches` M >= 1 (`model.pipeline_microbatches`) the blocks are one
`netlab.sharding.pipeline.Stack` (parameters stacked on a leading `layers` axis under
`blocks/layers`): on a mesh with `stage` > 1 they run as a GPipe pipeline of M microbatches, else
as a scan (the same function). Dense blocks only (an MoE layer's aux losses are not collected
through the pipeline).

With `trunk="reversible"` (`model.trunk`) the blocks are Rev-ViT couplings on two streams
(`netlab.nn.rev_dit`, Mangalam et al. 2022): F = the adaLN-Zero attention branch, G = the MLP
branch, run as a scan whose backward recomputes activations from outputs (memory flat in depth;
`model.reversible=False` in `build` trains the same network with ordinary backprop). Dense MLPs,
no pipeline, no remat (nothing to remat).

`trunk="revcol"`: RevCol's reversible columns (`netlab.nn.revcol_dit`, Cai et al. 2023),
depth / (levels x level_blocks) columns of `model.levels` levels, each level
`model.level_blocks` adaLN-Zero blocks; `trunk="irevnet"`: i-RevNet's couplings on channel
halves (`netlab.nn.irevnet_dit`, Jacobsen et al. 2018) with half-width DiT residual functions,
`model.depth` of them. Both recompute activations in the backward pass and take the same
restrictions as "reversible".
"""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from netlab.diffusion.registries import BACKBONES
from netlab.errors import UserError
from netlab.nn import irevnet_dit, layers, rev_dit, revcol_dit
from netlab.nn.blocks import AdaLNZeroBlock
from netlab.registry import check_choice, check_range
from netlab.sharding import axes, pipeline

TRUNKS = ("blocks", "reversible", "revcol", "irevnet")  # model.trunk
PRESETS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def preset(name: str) -> dict:
    """'B/2' -> dict(depth, width, num_heads, patch)."""
    size, _, patch = name.partition("/")
    if size not in PRESETS or patch not in ("2", "4", "8"):
        raise UserError(
            f"model.variant={name!r}: unknown DiT preset; use one of S|B|L|XL with /2, "
            f"/4 or /8, e.g. 'B/2'"
        )
    depth, width, heads = PRESETS[size]
    return dict(depth=depth, width=width, num_heads=heads, patch=int(patch))


def sizes(m) -> dict:
    """depth/width/num_heads/patch from `model.variant` ("S/2", ...) or the explicit fields."""
    if m.get("variant", ""):
        return preset(m["variant"])
    return dict(
        depth=int(m["depth"]),
        width=int(m["width"]),
        num_heads=int(m["num_heads"]),
        patch=int(m["patch"]),
    )


class DiT(nn.Module):
    image_size: int
    channels: int
    patch: int = 2
    width: int = 384
    depth: int = 12
    num_heads: int = 6
    num_classes: int = 0  # 0: unconditional
    mlp_ratio: float = 4.0
    learn_logvar: bool = False
    dtype: Any = jnp.float32
    remat_policy: Any = None
    sparse_mlp: Optional[Callable[..., nn.Module]] = None  # e.g. partial(MoEMLP, ...)
    sparse_every: int = 1
    # Constants of diffusers' DiT port (`netlab.convert.dit`); the defaults are the original DiT's.
    freq_shift: float = 0.0  # timestep frequencies 10000^(-i/(128 - freq_shift)); diffusers: 1
    mlp_norm_eps: float = 1e-6  # LayerNorm eps before each block's MLP; diffusers: 1e-5
    # A subclass of AdaLNZeroBlock with the same call (netlab.diffusion.token_routing's gated one).
    block_cls: Any = AdaLNZeroBlock
    pipeline_microbatches: int = 0  # >= 1: stacked blocks, pipelined over mesh axis `stage`
    trunk: str = "blocks"  # "reversible" | "revcol" | "irevnet": see the module docstring
    reversible_backward: bool = True  # trunk="reversible": False = ordinary backprop
    levels: int = 2  # trunk="revcol": levels per column
    level_blocks: int = 1  # trunk="revcol": DiT blocks per level

    def setup_check(self):
        if self.image_size % self.patch:
            raise UserError(
                f"model.patch={self.patch} does not divide the image size "
                f"{self.image_size}; pick a patch that divides it"
            )

    def mlp(self, i: int):
        """The MLP factory of block i: `sparse_mlp` in every `sparse_every`-th block, else dense."""
        if self.sparse_mlp is not None and i % self.sparse_every == self.sparse_every - 1:
            return self.sparse_mlp
        return functools.partial(layers.Mlp, int(self.width * self.mlp_ratio), self.dtype)

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False, extra_cond=None):
        """x: (B, H, W, C); noise_cond: (B,) float; labels: (B,) int in [0, num_classes] (last =
        null); `train` reaches the MLPs (an MoE layer's capacity and jitter); `extra_cond` (B,
        width), if given, is added to the conditioning vector (CTM's embedding of its target time,
        distill_task.py)."""
        self.setup_check()
        fdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        b, p, g = x.shape[0], self.patch, self.image_size // self.patch
        h = nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            dtype=self.dtype,
            name="patchify",
            kernel_init=axes.param(layers.xavier, None, None, None, axes.EMBED),
            bias_init=axes.param(layers.zeros, axes.EMBED),
        )(x.astype(self.dtype))
        h = h.reshape(b, g * g, self.width) + layers.sincos_2d(g, self.width).astype(self.dtype)
        h = axes.constrain(h, axes.BATCH, axes.LENGTH, axes.EMBED)
        c = layers.TimestepEmbedder(self.width, freq_shift=self.freq_shift, name="t_embed")(
            noise_cond
        )
        if self.num_classes:
            table = self.param(
                "label_embed",
                axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                (self.num_classes + 1, self.width),
                fdt,
            )
            c = c + table[labels]
        if extra_cond is not None:
            c = c + extra_cond.astype(c.dtype)
        if self.pipeline_microbatches:
            stacked = functools.partial(
                self.block_cls,
                self.width,
                self.num_heads,
                self.mlp(0),
                self.dtype,
                mlp_norm_eps=self.mlp_norm_eps,
            )
            h = pipeline.Stack(
                stacked,
                self.depth,
                self.pipeline_microbatches,
                static=(train,),
                remat_policy=self.remat_policy,
                name="blocks",
            )(h, c)
        if self.trunk == "reversible":
            h = rev_dit.stack(
                self.width,
                self.num_heads,
                self.depth,
                self.mlp_ratio,
                self.dtype,
                self.mlp_norm_eps,
                self.reversible_backward,
            )(name="rev_blocks")(h, c)
        if self.trunk == "revcol":
            h = revcol_dit.stack(
                self.width,
                self.num_heads,
                self.depth // (self.levels * self.level_blocks),
                self.levels,
                self.level_blocks,
                self.mlp_ratio,
                self.dtype,
                self.mlp_norm_eps,
                self.reversible_backward,
            )(name="revcol")(h, c)
        if self.trunk == "irevnet":
            h = irevnet_dit.stack(
                self.width,
                self.num_heads,
                self.depth,
                self.mlp_ratio,
                self.dtype,
                self.mlp_norm_eps,
                self.reversible_backward,
            )(name="irevnet")(h, c)
        block = self.block_cls
        if self.remat_policy is not None:  # static_argnums counts self: (self, x, c, train)
            block = nn.remat(self.block_cls, policy=self.remat_policy, static_argnums=(3,))
        plain = not self.pipeline_microbatches and self.trunk == "blocks"
        for i in range(self.depth if plain else 0):
            h = block(
                self.width,
                self.num_heads,
                self.mlp(i),
                self.dtype,
                mlp_norm_eps=self.mlp_norm_eps,
                name=f"block{i}",
            )(h, c, train)
        mod = layers.dense(
            2 * self.width, axes.EMBED, axes.MLP, fdt, kernel_init=layers.zeros, name="final_adaLN"
        )(nn.silu(c))
        shift, scale = jnp.split(mod, 2, axis=-1)
        h = layers.modulate(
            layers.layer_norm(self.dtype, affine=False, name="final_ln")(h),
            shift.astype(self.dtype),
            scale.astype(self.dtype),
        )
        h = layers.dense(
            p * p * self.channels,
            axes.EMBED,
            None,
            self.dtype,
            kernel_init=layers.zeros,
            name="final",
        )(h)
        out = h.reshape(b, g, g, p, p, self.channels).transpose(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, self.image_size, self.image_size, self.channels).astype(fdt)
        if not self.learn_logvar:
            return out
        logvar = layers.dense(1, axes.EMBED, None, fdt, kernel_init=layers.zeros, name="logvar")(c)[
            :, 0
        ]
        return out, logvar


@BACKBONES.register("dit")
def build(m, *, data_shape, num_classes, policy, sparse_mlp=None) -> DiT:
    """DiT from `config.model` (`variant` or depth/width/num_heads/patch, `learn_logvar`,
    `mlp_every`) for square images `data_shape` = (H, W, C)."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise UserError(
            f"model.backbone='dit' needs square images (H, H, C), not data of shape "
            f"{tuple(data_shape)}; choose model.backbone='mlp' for vectors"
        )
    s = sizes(m)
    image_size, channels = int(data_shape[0]), int(data_shape[2])
    if s["patch"] < 1 or image_size % s["patch"]:
        ok = [p for p in range(1, image_size + 1) if image_size % p == 0]
        raise UserError(
            f"model.patch={s['patch']} does not divide the image size {image_size}; "
            f"choose one of {', '.join(map(str, ok))}"
        )
    if s["width"] % 4 or s["num_heads"] < 1 or s["width"] % s["num_heads"]:
        raise UserError(
            f"model.width={s['width']} must be a multiple of 4 (2-D sin-cos "
            f"positions) and of model.num_heads={s['num_heads']}"
        )
    every = int(m.get("mlp_every", 1))
    if every < 1:
        raise UserError(f"model.mlp_every={every}: expected an integer >= 1")
    micro = int(m.get("pipeline_microbatches", 0))
    if micro < 0 or (micro and sparse_mlp is not None):
        raise UserError(
            f"model.pipeline_microbatches={micro}: use 0 (per-block parameters) or a number of "
            "microbatches >= mesh.stage with a dense model.mlp (the pipeline stacks dense blocks)"
        )
    trunk = check_choice("model.trunk", m.get("trunk", "blocks"), TRUNKS)
    if trunk != "blocks" and (micro or sparse_mlp is not None):
        raise UserError(
            f"model.trunk={trunk!r} runs dense blocks without a pipeline: set "
            "model.pipeline_microbatches=0 and a dense model.mlp, or model.trunk='blocks'"
        )
    levels = check_range("model.levels", m.get("levels", 2), 1, integer=True)
    level_blocks = check_range("model.level_blocks", m.get("level_blocks", 1), 1, integer=True)
    if trunk == "revcol" and s["depth"] % (levels * level_blocks):
        raise UserError(
            f"model.depth={s['depth']} must be a multiple of model.levels x model.level_blocks "
            f"= {levels * level_blocks} for model.trunk='revcol' (the columns hold the blocks)"
        )
    if trunk == "irevnet" and (s["width"] // 2) % s["num_heads"]:
        raise UserError(
            f"model.trunk='irevnet' runs blocks of width model.width / 2 = {s['width'] // 2}, "
            f"which model.num_heads={s['num_heads']} must divide; change either"
        )
    return DiT(
        trunk=trunk,
        reversible_backward=bool(m.get("reversible", True)),
        levels=levels,
        level_blocks=level_blocks,
        image_size=image_size,
        channels=channels,
        num_classes=num_classes,
        learn_logvar=bool(m.get("learn_logvar", False)),
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
        sparse_mlp=sparse_mlp,
        sparse_every=every,
        pipeline_microbatches=micro,
        **s,
    )

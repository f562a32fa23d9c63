"""RIN: Recurrent Interface Networks, latent tokens that read from and write to the image patches.

Jabri, Fleet & Chen 2023, "Scalable Adaptive Computation for Iterative Generation" (Sec. 2, Fig. 2
and 3; the authors' code calls it "Tape"). The image is patchified into *interface* tokens
(stride-p convolution, LayerNorm, learned positions); a smaller set of learned *latent* tokens,
with the noise-level and class embeddings appended as extra latent tokens, carries the
computation. Each of `depth` blocks is

    read:    latents   += CrossAttn(LN(latents), LN(interface)); latents += MLP(LN(latents))
    compute: `compute_depth` pre-LN Transformer layers on the latents
    write:   interface += CrossAttn(LN(interface), LN(latents)); interface += MLP(LN(interface))

and the output is LN + linear on the interface tokens, unpatchified (Sec. 2.1). Most FLOPs are
spent on the latents, whose count does not grow with the image.

Latent self-conditioning (Sec. 2.2, Alg. 1): the final latent slots of a first, stop-gradient
pass are fed back through an MLP and a LayerNorm whose gain starts at 0 and added to the initial
latents of the pass that is trained. In training every example makes the first pass and keeps its
result with probability `self_cond` (0.9; the others get zero latents, the authors' "masking"
form), drawn from the task's `dropout` PRNG stream. The paper carries the latents over from one
sampling step to the next; netlab's samplers call a stateless `denoise(x, logsnr)`, which cannot
carry them, so at sampling the network instead makes `eval_passes` passes per call (2 by default:
a zero-latent pass, then one conditioned on it; the computation of training), at that many
network passes per sampler step. `eval_passes=1` is the zero-latent model alone (the 10% case of
training) at the cost of one pass.

Sizes are the authors' layout at digits scale; the ImageNet-64 config has patch 8, 128 latents x
768, interface 512, 4 blocks of 4 compute layers, 16 heads.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.diffusion.registries import BACKBONES
from netlab.errors import UserError
from netlab.nn import layers
from netlab.nn.blocks import PreLNBlock
from netlab.registry import check_range


class CrossBlock(nn.Module):
    """x += CrossAttn(LN(x), LN(ctx)); x += MLP(LN(x)): RIN's read (x = latents) or write."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, ctx):
        q = layers.layer_norm(self.dtype, name="ln_q")(x)
        kv = layers.layer_norm(self.dtype, name="ln_kv")(ctx)
        x = x + nn.MultiHeadDotProductAttention(
            self.num_heads, dtype=self.dtype, kernel_init=layers.xavier, name="attn"
        )(q, kv)
        h = layers.layer_norm(self.dtype, name="ln_mlp")(x)
        return x + layers.Mlp(4 * x.shape[-1], self.dtype, name="mlp")(h)


class RINBlock(nn.Module):
    """One read -> compute -> write block on (latents, interface)."""

    num_heads: int
    compute_depth: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z, h):
        z = CrossBlock(self.num_heads, self.dtype, name="read")(z, h)
        mlp = functools.partial(layers.Mlp, 4 * z.shape[-1], self.dtype)
        for i in range(self.compute_depth):
            z = PreLNBlock(self.num_heads, mlp, self.dtype, name=f"compute{i}")(z)
        h = CrossBlock(self.num_heads, self.dtype, name="write")(h, z)
        return z, h


class RIN(nn.Module):
    image_size: int
    channels: int
    patch: int = 2
    width: int = 128  # latent width
    interface_width: int = 64
    num_latents: int = 16
    depth: int = 2  # read/compute/write blocks
    compute_depth: int = 2  # Transformer layers on the latents per block
    num_heads: int = 4
    num_classes: int = 0  # 0: unconditional
    self_cond: float = 0.9  # probability of keeping the first pass's latents in training
    eval_passes: int = 2  # passes per call at sampling (1: no self-conditioning)
    dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        """x: (B, H, W, C); noise_cond: (B,); labels: (B,) in [0, num_classes] (last = null)."""
        fdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        b, p, g = x.shape[0], self.patch, self.image_size // self.patch
        h = nn.Conv(
            self.interface_width, (p, p), strides=(p, p), dtype=self.dtype, name="patchify"
        )(x.astype(self.dtype))
        h = layers.layer_norm(self.dtype, name="patch_ln")(h.reshape(b, g * g, -1))
        pos = self.param("interface_pos", nn.initializers.normal(0.02), h.shape[1:], fdt)
        h = h + pos.astype(self.dtype)
        cond = layers.TimestepEmbedder(self.width, name="t_embed")(noise_cond)[:, None]
        if self.num_classes:
            table = self.param(
                "label_embed", nn.initializers.normal(0.02), (self.num_classes + 1, self.width), fdt
            )
            cond = jnp.concatenate([cond, table[labels][:, None]], axis=1)
        cond = cond.astype(self.dtype)
        latents = self.param(
            "latents", nn.initializers.normal(0.02), (self.num_latents, self.width), fdt
        )
        prev_mlp = layers.Mlp(self.width, self.dtype, name="prev_mlp")
        prev_ln = nn.LayerNorm(1e-6, dtype=self.dtype, scale_init=layers.zeros, name="prev_ln")
        block = RINBlock
        if self.remat_policy is not None:
            block = nn.remat(RINBlock, policy=self.remat_policy)
        blocks = [
            block(self.num_heads, self.compute_depth, self.dtype, name=f"block{i}")
            for i in range(self.depth)
        ]

        def run(prev):
            z = latents.astype(self.dtype) + prev_ln(prev_mlp(prev))
            z, out = jnp.concatenate([z, cond], axis=1), h
            for blk in blocks:
                z, out = blk(z, out)
            return z[:, : self.num_latents], out

        zero = jnp.zeros((b, self.num_latents, self.width), self.dtype)
        if train and self.self_cond > 0:
            first = jax.lax.stop_gradient(run(zero)[0])
            keep = jax.random.bernoulli(self.make_rng("dropout"), self.self_cond, (b, 1, 1))
            _, out = run(jnp.where(keep, first, zero))
        else:
            prev = zero
            for _ in range(0 if train else self.eval_passes - 1):
                prev = jax.lax.stop_gradient(run(prev)[0])
            _, out = run(prev)
        out = layers.layer_norm(self.dtype, name="out_ln")(out)
        out = nn.Dense(
            p * p * self.channels, dtype=self.dtype, kernel_init=layers.zeros, name="out"
        )(out)
        out = out.reshape(b, g, g, p, p, self.channels).transpose(0, 1, 3, 2, 4, 5)
        return out.reshape(b, self.image_size, self.image_size, self.channels).astype(fdt)


@BACKBONES.register("rin")
def build(m, *, data_shape, num_classes, policy) -> RIN:
    """RIN from `config.model`: patch, width (latents), num_heads, depth (blocks), rin_interface
    (interface width), rin_latents, rin_compute (layers per block), rin_self_cond (0.9),
    rin_eval_passes (2)."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise UserError(
            f"model.backbone='rin' needs square images (H, H, C), not data of shape "
            f"{tuple(data_shape)}; choose model.backbone='mlp' for vectors"
        )
    if m.get("learn_logvar", False):
        raise UserError("model.learn_logvar=True: RIN has no log-variance head; set it to False")
    image_size = int(data_shape[0])
    patch = check_range("model.patch", int(m.get("patch", 2)), 1, image_size, integer=True)
    if image_size % patch:
        raise UserError(f"model.patch={patch} does not divide the image size {image_size}")
    width = check_range("model.width", int(m.get("width", 128)), 1, integer=True)
    heads = check_range("model.num_heads", int(m.get("num_heads", 4)), 1, integer=True)
    interface = check_range("model.rin_interface", int(m.get("rin_interface", 64)), 1, integer=True)
    if width % heads or interface % heads:
        raise UserError(
            f"model.num_heads={heads} must divide model.width={width} and "
            f"model.rin_interface={interface}"
        )
    return RIN(
        image_size=image_size,
        channels=int(data_shape[2]),
        patch=patch,
        width=width,
        interface_width=interface,
        num_latents=check_range(
            "model.rin_latents", int(m.get("rin_latents", 16)), 1, integer=True
        ),
        depth=check_range("model.depth", int(m.get("depth", 2)), 1, integer=True),
        compute_depth=check_range(
            "model.rin_compute", int(m.get("rin_compute", 2)), 0, integer=True
        ),
        num_heads=heads,
        num_classes=num_classes,
        self_cond=check_range("model.rin_self_cond", float(m.get("rin_self_cond", 0.9)), 0.0, 1.0),
        eval_passes=check_range(
            "model.rin_eval_passes", int(m.get("rin_eval_passes", 2)), 1, integer=True
        ),
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )

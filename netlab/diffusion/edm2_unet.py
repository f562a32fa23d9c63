"""EDM2's magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models", config G of Table 1; Sec. 2 and the appendix's network details), at
small sizes. Equation numbers are those the authors' code cites.

Built only from the MP layers of `mp_layers`:
- no biases and no group norms; every conv / linear is an `MPConv` with forced weight
  normalisation (Eqs. 47, 66): the forward pass sees unit-norm rows whatever the stored scale;
- the input gets a constant "ones" channel (a bias-free network's only source of a DC offset);
  the first 3x3 conv maps it to `width` channels;
- embedding: MP Fourier features sqrt(2) cos(2 pi (f c_noise + phi)) of c_noise = ln(sigma) / 4
  with fixed f ~ N(0, 1), phi ~ U(0, 1) (Eq. 75), an MPConv, mp_sum (t = 0.5) with an MPConv of
  the one-hot class times sqrt(num_classes), then mp_silu (Eq. 81);
- blocks: encoder blocks resample, take a 1x1 MPConv skip when the width changes and
  pixel-normalise their input (EDM2's replacement for group norm); the residual branch is
  conv3(mp_silu(x)), times (1 + MPConv(emb, gain=emb_gain)) with the learned scalar emb_gain
  initialised to 0, mp_silu, dropout, conv3, then mp_sum(x, y, t=0.3) (Eq. 88); decoder blocks
  apply their 1x1 skip just before that sum; activations are clipped to +-256;
- cosine attention at the listed (low) resolutions and in the first bottleneck block: 1x1 qkv,
  q, k, v pixel-normalised per head, softmax(q.k / sqrt(c)), 1x1 projection, mp_sum(x, y, 0.3);
- every encoder output is a skip, joined in the decoder by mp_cat(x, skip, t=0.5) (Eq. 103);
  resampling is 2x2 box down / nearest up;
- the output MPConv has the learned scalar gain `out_gain` initialised to 0, so the network
  starts at F = 0 (EDM's D = c_skip x);
- with `learn_logvar` the uncertainty u(sigma) = MPConv(MPFourier_128(c_noise)) (Eq. 21) is a
  second output, which the task's EDM2 loss uses (`model.learn_logvar`).

Where this differs from the authors' code: the sizes (`width` x `channel_mult`, default 32 x
(1, 2) on 8 x 8 digits, `num_blocks` per level, heads of `channels_per_head`; EDM2: 192 x
(1, 2, 3, 4), 3 blocks, 64 channels per head, attention at 16 and 8); the noise input is the
task's `noise_cond` = 100 c_noise (netlab/diffusion/task.py), divided back here; the CFG null
label (index num_classes) is the all-zero one-hot, as EDM2 feeds dropped labels; the Fourier
frequencies are constants drawn from a fixed seed rather than saved buffers; and the stored
weights are re-normalised by the optimizer (`train.edm2_optim.forced_weight_norm`, on with
`optimizer.forced_weight_norm`) after each step rather than inside the forward pass. Registered
as `model.backbone="edm2_unet"`; `train.remat` rematerialises every block.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import mp_layers as mp
from netlab.diffusion.registries import BACKBONES
from netlab.errors import UserError
from netlab.registry import check_range
from netlab.sharding import axes

RES_BALANCE = 0.3  # mp_sum weight of the residual branch (Fig. 21)
ATTN_BALANCE = 0.3
CONCAT_BALANCE = 0.5  # mp_cat weight of the encoder skip
LABEL_BALANCE = 0.5  # mp_sum weight of the class embedding
CLIP_ACT = 256.0
NOISE_COND_SCALE = 100.0  # the task's noise_cond is 100 * ln(sigma) / 4


class MPFourier(nn.Module):
    """sqrt(2) cos(2 pi (f x + phi)) with fixed f ~ N(0, 1), phi ~ U(0, 1) (Eq. 75): unit RMS for
    any x. The frequencies are constants drawn from `seed` (EDM2's buffers), not parameters."""

    features: int
    seed: int = 0

    def __call__(self, x):
        rng = np.random.default_rng(self.seed)
        freqs = rng.standard_normal(self.features).astype(np.float32)
        phases = rng.uniform(size=self.features).astype(np.float32)
        y = x.astype(jnp.float32)[:, None] * freqs + phases
        return jnp.sqrt(2.0) * jnp.cos(2 * jnp.pi * y)


def _resample(x, mode):
    if mode == "down":
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    if mode == "up":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x


class Block(nn.Module):
    """One encoder ("enc") or decoder ("dec") block of Fig. 21, optionally with attention."""

    out: int
    flavor: str = "enc"
    resample: str = "keep"  # keep | down | up
    attention: bool = False
    channels_per_head: int = 64
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, emb, train: bool = False):
        x = _resample(x, self.resample)
        if self.flavor == "enc":
            if x.shape[-1] != self.out:
                x = mp.MPConv(self.out, (1, 1), self.dtype, name="conv_skip")(x)
            x = mp.pixel_norm(x)
        y = mp.MPConv(self.out, (3, 3), self.dtype, name="conv_res0")(mp.mp_silu(x))
        emb_gain = self.param("emb_gain", axes.param(nn.initializers.zeros), (), jnp.float32)
        c = mp.MPConv(self.out, (), self.dtype, name="emb_linear")(emb, gain=emb_gain) + 1
        y = mp.mp_silu(y * c[:, None, None, :].astype(y.dtype))
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = mp.MPConv(self.out, (3, 3), self.dtype, name="conv_res1")(y)
        if self.flavor == "dec" and x.shape[-1] != self.out:
            x = mp.MPConv(self.out, (1, 1), self.dtype, name="conv_skip")(x)
        x = mp.mp_sum(x.astype(y.dtype), y, RES_BALANCE)
        if self.attention:
            x = mp.mp_sum(x, self._attend(x), ATTN_BALANCE)
        return jnp.clip(x, -CLIP_ACT, CLIP_ACT)

    def _attend(self, x):
        b, h, w, c = x.shape
        heads = max(c // self.channels_per_head, 1)
        qkv = mp.MPConv(3 * c, (1, 1), self.dtype, name="attn_qkv")(x)
        qkv = qkv.reshape(b, h * w, heads, c // heads, 3)
        q, k, v = (a[..., 0] for a in jnp.split(mp.normalize(qkv, axis=3), 3, axis=-1))
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k / np.sqrt(c // heads)).astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        y = jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, h, w, c)
        return mp.MPConv(c, (1, 1), self.dtype, name="attn_proj")(y)


class EDM2UNet(nn.Module):
    image_size: int
    channels: int
    width: int = 32
    channel_mult: Sequence[int] = (1, 2)
    num_blocks: int = 2
    attention_resolutions: Sequence[int] = (4,)
    channels_per_head: int = 64
    dropout: float = 0.0
    num_classes: int = 0
    learn_logvar: bool = False
    dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        block = Block
        if self.remat_policy is not None:
            block = nn.remat(Block, policy=self.remat_policy, static_argnums=(3,))
        widths = [self.width * k for k in self.channel_mult]
        c_noise = noise_cond.astype(jnp.float32) / NOISE_COND_SCALE
        emb_width = max(widths)
        emb = mp.MPConv(emb_width, (), name="emb_noise")(MPFourier(widths[0])(c_noise))
        if self.num_classes:
            labels = jnp.zeros(x.shape[:1], jnp.int32) if labels is None else labels
            onehot = jax.nn.one_hot(labels, self.num_classes)  # the null label: all zeros
            cls = mp.MPConv(emb_width, (), name="emb_label")(onehot * np.sqrt(self.num_classes))
            emb = mp.mp_sum(emb, cls, LABEL_BALANCE)
        emb = mp.mp_silu(emb).astype(self.dtype)

        def make(out, flavor, name, resample="keep", attention=False):
            return block(
                out,
                flavor,
                resample,
                attention,
                self.channels_per_head,
                self.dropout,
                self.dtype,
                name=name,
            )

        h = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1).astype(self.dtype)
        skips = []
        for lvl, cout in enumerate(widths):
            res = self.image_size >> lvl
            if lvl == 0:
                h = mp.MPConv(cout, (3, 3), self.dtype, name=f"enc{res}_conv")(h)
            else:
                h = make(h.shape[-1], "enc", f"enc{res}_down", "down")(h, emb, train)
            skips.append(h)
            for i in range(self.num_blocks):
                attn = res in self.attention_resolutions
                h = make(cout, "enc", f"enc{res}_block{i}", attention=attn)(h, emb, train)
                skips.append(h)
        for lvl, cout in reversed(list(enumerate(widths))):
            res = self.image_size >> lvl
            if lvl == len(widths) - 1:
                h = make(h.shape[-1], "dec", f"dec{res}_in0", attention=True)(h, emb, train)
                h = make(h.shape[-1], "dec", f"dec{res}_in1")(h, emb, train)
            else:
                h = make(h.shape[-1], "dec", f"dec{res}_up", "up")(h, emb, train)
            for i in range(self.num_blocks + 1):
                h = mp.mp_cat(h, skips.pop(), CONCAT_BALANCE)
                attn = res in self.attention_resolutions
                h = make(cout, "dec", f"dec{res}_block{i}", attention=attn)(h, emb, train)
        out_gain = self.param("out_gain", axes.param(nn.initializers.zeros), (), jnp.float32)
        out = mp.MPConv(self.channels, (3, 3), self.dtype, name="out_conv")(h, gain=out_gain)
        out = out.astype(jnp.float32)
        if not self.learn_logvar:
            return out
        u = MPFourier(128, seed=1, name="logvar_fourier")(c_noise)
        return out, mp.MPConv(1, (), name="logvar_linear")(u)[:, 0]


@BACKBONES.register("edm2_unet")
def build(m, *, data_shape, num_classes, policy) -> EDM2UNet:
    """EDM2 U-Net from `config.model`: width (32), channel_mult ((1, 2)), num_blocks (2),
    attention_resolutions ((4,)), channels_per_head (64), dropout (0), learn_logvar, for square
    images `data_shape` = (H, H, C)."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise UserError(
            f"model.backbone='edm2_unet' needs square images (H, H, C), not data of shape "
            f"{tuple(data_shape)}; choose model.backbone='mlp' for vectors"
        )
    width = int(m.get("width", 32))
    check_range("model.width", width, 1, integer=True)
    mult = tuple(int(k) for k in m.get("channel_mult", (1, 2)))
    if not mult or min(mult) < 1:
        raise UserError(f"model.channel_mult={mult}: expected positive integers, e.g. (1, 2)")
    if data_shape[0] % 2 ** (len(mult) - 1):
        raise UserError(
            f"model.channel_mult={mult}: {len(mult)} levels need an image size divisible by "
            f"{2 ** (len(mult) - 1)}, not {data_shape[0]}; shorten it"
        )
    per_head = int(m.get("channels_per_head", 64))
    check_range("model.channels_per_head", per_head, 1, integer=True)
    num_blocks = int(m.get("num_blocks", 2))
    check_range("model.num_blocks", num_blocks, 1, integer=True)
    dropout = float(m.get("dropout", 0.0))
    check_range("model.dropout", dropout, 0.0, 0.99)
    return EDM2UNet(
        image_size=int(data_shape[0]),
        channels=int(data_shape[2]),
        width=width,
        channel_mult=mult,
        num_blocks=num_blocks,
        attention_resolutions=tuple(int(r) for r in m.get("attention_resolutions", (4,))),
        channels_per_head=per_head,
        dropout=dropout,
        num_classes=num_classes,
        learn_logvar=bool(m.get("learn_logvar", False)),
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )

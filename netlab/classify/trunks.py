"""Trunks of the digits classifier: the shared blocks of `netlab/nn/` on one small image task.

`--config.model.trunk=NAME` (configs/classify_digits.py lists the commands). Every trunk maps
images (B, 8, 8, 1) to logits (B, 10); the keys it reads are `model.width` (channels), `model.depth`
(blocks, columns or layers), `model.levels` (RevCol) and `model.reversible` (False: the same
network trained with ordinary backpropagation, for memory comparisons; bench/reversible_memory.py).

- `convnet`: `netlab.nn.convnet.ConvNet` (the default; `model.channels`, `model.hidden`).
- `revnet`: Gomez et al. 2017's reversible residual network: a conv stem, `depth` additive
  couplings whose F and G are LayerNorm-conv-GELU-conv on half the channels (the paper's
  BN-ReLU-conv without batch statistics, so the inverse holds per example), mean pool, linear head.
  The gradient recomputes activations from outputs (`netlab.nn.reversible`; the couplings run
  as a scan).
- `revcol`: Cai et al. 2023's reversible columns: a conv stem x_0 feeds `depth` columns of `levels`
  levels of equal shape; F_j = conv(concat(lower, upper)) - GELU - conv; gamma_j per channel,
  initialised to 0.5 and kept at |gamma| >= 1e-3 as in the authors' code; the head reads the last
  column's top level (`netlab.nn.revcol`; the columns run as a scan).
- `irevnet`: Jacobsen et al. 2018's i-RevNet, injective (the 1 input channel zero-padded to 4, then
  the invertible 2x2 down-sampling: 4 x 4 x 16), `depth` blocks, one of stride 2 in the middle;
  mean pool and a linear head (not inverted, as in the paper).
- `hypernet`: Ha et al. 2017's static hypernetwork: a conv stem, then `depth` 3x3 convolutions
  whose kernels one shared hypernetwork generates from per-tile embeddings (tile = width / 2).
- `mixture`: MixtureGrowth's template-mixed dense layer (Pham et al. 2024) as the hidden layer of
  an MLP on the flattened image (`hidden` units, a 2 x 2 grid of blocks from 4 templates).
- `hopfield`: Ramsauer et al. 2021's HopfieldPooling: a conv stem, the 64 pixels' features as
  stored patterns, one learned state pattern retrieves the image's summary, linear head.

Only `convnet` applies `train.remat` and `train.compute_dtype`; the others compute in float32 (a
reversible backward reconstructs activations by subtraction, which bfloat16 would not survive)
and the reversible ones need no remat.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.classify.registries import TRUNKS
from netlab.errors import UserError
from netlab.nn import hopfield, hypernetwork, irevnet, mixture_growth, revcol, reversible
from netlab.nn.convnet import ConvNet
from netlab.registry import check_range

NUM_CLASSES = 10


def _field(m, key, lo, default):
    return check_range(f"model.{key}", m.get(key, default), lo, integer=True)


def _even(m, key, default, trunk):
    value = _field(m, key, 2, default)
    if value % 2:
        raise UserError(
            f"model.{key}={value}: model.trunk={trunk} splits it in two halves; give an even number"
        )
    return value


def _head(x, dtype):
    """Mean over the spatial axes, LayerNorm, linear classifier; float32 logits."""
    x = nn.LayerNorm(dtype=dtype, name="head_norm")(x.mean(axis=(1, 2)))
    return nn.Dense(NUM_CLASSES, dtype=dtype, name="head")(x).astype(jnp.float32)


def _stem(x, width, dtype):
    return nn.Conv(width, (3, 3), dtype=dtype, name="stem")(x.astype(dtype))


@TRUNKS.register("convnet")
def convnet(m, policy):
    return ConvNet(
        channels=tuple(m.channels),
        hidden=m.hidden,
        num_classes=NUM_CLASSES,
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )


class _ConvF(nn.Module):
    """LayerNorm - conv3x3 - GELU - conv3x3 on (B, H, W, features)."""

    features: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.features, (3, 3), name="conv1")(nn.LayerNorm(name="norm")(x))
        return nn.Conv(self.features, (3, 3), name="conv2")(nn.gelu(h))


class RevNetTrunk(nn.Module):
    width: int = 16
    depth: int = 4
    reversible: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        f = functools.partial(_ConvF, self.width // 2)
        blocks = tuple((f, f) for _ in range(self.depth))
        rev = reversible.RevNet(blocks, reversible=self.reversible, scan=True, name="revnet")
        h = rev(_stem(x, self.width, jnp.float32))
        return _head(h, self.dtype)


@TRUNKS.register("revnet")
def revnet(m, policy):
    width = _even(m, "width", 16, "revnet")
    return RevNetTrunk(width, _field(m, "depth", 1, 4), bool(m.get("reversible", True)))


class _Level(nn.Module):
    """RevCol's F_j(lower, upper): conv3x3 of their concatenation - GELU - conv3x3."""

    features: int

    @nn.compact
    def __call__(self, lower, upper):
        h = nn.Conv(self.features, (3, 3), name="conv1")(jnp.concatenate([lower, upper], -1))
        return nn.Conv(self.features, (3, 3), name="conv2")(nn.gelu(h))


_half = nn.initializers.constant(0.5)


class RevColTrunk(nn.Module):
    width: int = 16
    depth: int = 4  # columns
    levels: int = 2
    reversible: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x0 = _stem(x, self.width, jnp.float32)
        level = _Level(self.width, parent=None)
        fn = lambda p, lower, upper: level.apply({"params": p}, lower, upper)  # noqa: E731
        params = []
        for i in range(self.depth):
            column = []
            for j in range(self.levels):
                f = self.param(f"col{i}_level{j}_f", lambda k: level.init(k, x0, x0)["params"])
                g = self.param(f"col{i}_level{j}_gamma", _half, x0.shape[-1:])
                g = jnp.where(g >= 0, 1.0, -1.0) * jnp.maximum(jnp.abs(g), 1e-3)
                column.append({"f": f, "gamma": g})
            params.append(column)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)  # columns on a leading axis
        run = revcol.revcol_scan if self.reversible else revcol.plain_columns_scan
        zeros = tuple(jnp.zeros_like(x0) for _ in range(self.levels))
        out = run((fn,) * self.levels, stacked, x0, zeros)
        return _head(out[-1], self.dtype)


@TRUNKS.register("revcol")
def revcol_trunk(m, policy):
    return RevColTrunk(
        _field(m, "width", 1, 16),
        _field(m, "depth", 1, 4),
        _field(m, "levels", 1, 2),
        bool(m.get("reversible", True)),
    )


class IRevNetTrunk(nn.Module):
    width: int = 16
    depth: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        strides = tuple(2 if i == self.depth // 2 else 1 for i in range(self.depth))
        h = irevnet.IRevNet(strides, self.width, pad_channels=3, name="irevnet")(
            x.astype(jnp.float32)
        )
        return _head(h, self.dtype)


@TRUNKS.register("irevnet")
def irevnet_trunk(m, policy):
    return IRevNetTrunk(_field(m, "width", 1, 16), _field(m, "depth", 1, 4))


class HyperTrunk(nn.Module):
    width: int = 16
    depth: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(_stem(x, self.width, jnp.float32))
        tile = (self.width // 2, self.width // 2)
        h = hypernetwork.HyperConvStack(
            self.width, (self.width,) * self.depth, tile=tile, z_dim=16, hidden=16, name="hyper"
        )(h)
        return _head(nn.gelu(h), self.dtype)


@TRUNKS.register("hypernet")
def hypernet(m, policy):
    return HyperTrunk(_even(m, "width", 16, "hypernet"), _field(m, "depth", 1, 4))


class MixtureTrunk(nn.Module):
    hidden: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], -1).astype(jnp.float32)
        h = mixture_growth.TemplateDense(self.hidden, num_templates=4, grid=2, name="mixed")(h)
        return nn.Dense(NUM_CLASSES, name="head")(nn.gelu(h)).astype(jnp.float32)


@TRUNKS.register("mixture")
def mixture(m, policy):
    return MixtureTrunk(_even(m, "hidden", 128, "mixture"))


class HopfieldTrunk(nn.Module):
    width: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(_stem(x, self.width, jnp.float32))
        tokens = h.reshape(h.shape[0], -1, self.width)
        pooled = hopfield.HopfieldPooling(num_queries=1, name="pool")(tokens)[:, 0]
        pooled = nn.LayerNorm(name="head_norm")(pooled)
        return nn.Dense(NUM_CLASSES, name="head")(pooled).astype(jnp.float32)


@TRUNKS.register("hopfield")
def hopfield_trunk(m, policy):
    return HopfieldTrunk(_field(m, "width", 1, 16))

"""i-RevNet: Jacobsen, Smeulders & Oyallon 2018, "i-RevNet: Deep Invertible Networks" (ICLR).

A network that loses no information up to its last layer: every block is invertible and the
inverse is written out explicitly. The input is first mapped by an injective
operator S~ and split into two halves (x~_0, x_0); block j+1 computes

    x~_{j+1} = S_{j+1} x_j,          x_{j+1} = S_{j+1} x~_j + F_{j+1}(x_j)

and its inverse

    x_j = S_{j+1}^{-1} x~_{j+1},     x~_j = S_{j+1}^{-1} (x_{j+1} - F_{j+1}(x_j))

where S is the identity (stride 1) or the invertible down-sampling that stacks each 2x2 spatial
block into channels (stride 2; `invertible_downsample`), and F (stride 2 too when S down-samples)
need not be invertible. The output is the concatenation (x_J, x~_J).

S~ is the invertible down-sampling (the bijective i-RevNet) and, with `pad_channels > 0`, a zero
padding of the channels first (the injective i-RevNet: its left inverse drops the padding).

Differences from the paper, deliberately: F is conv3x3(stride) - ReLU - conv3x3 without the batch
normalisation of the authors' bottleneck, so the network is a function of each example (the
inverse then holds for any batch); the classifier head (pooling + linear) is left to the user.
The digits classifier uses it as `--config.model.trunk=irevnet` (netlab/classify/trunks.py).
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def invertible_downsample(x, block: int = 2):
    """(N, H, W, C) -> (N, H/b, W/b, b*b*C): each b x b spatial block stacked into channels."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // block, block, w // block, block, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // block, w // block, block * block * c)


def invertible_upsample(x, block: int = 2):
    """The inverse of `invertible_downsample`."""
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, block, block, c // (block * block))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * block, w * block, c // (block * block))


class _F(nn.Module):
    """x_j (h, w, c) -> the shape of S x~_j: (h/s, w/s, c s^2)."""

    hidden: int
    stride: int

    @nn.compact
    def __call__(self, x):
        s = (self.stride, self.stride)
        h = nn.relu(nn.Conv(self.hidden, (3, 3), strides=s, padding="SAME", name="conv1")(x))
        out = x.shape[-1] * self.stride * self.stride
        return nn.Conv(out, (3, 3), padding="SAME", name="conv2")(h)


def _down(x, s):
    return invertible_downsample(x) if s == 2 else x


def _up(x, s):
    return invertible_upsample(x) if s == 2 else x


class IRevNet(nn.Module):
    """Invertible trunk on images (N, H, W, C): `strides` of 1 or 2 per block; `inverse(z)`."""

    strides: Sequence[int] = (1, 2, 1)
    hidden: int = 16
    pad_channels: int = 0

    def setup(self):
        for s in self.strides:
            if s not in (1, 2):
                raise ValueError(f"i-RevNet strides must be 1 or 2, got {tuple(self.strides)}")
        self.fs = [_F(self.hidden, s) for s in self.strides]

    def __call__(self, x):
        if self.pad_channels:
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.pad_channels)))
        xt, xj = jnp.split(invertible_downsample(x), 2, axis=-1)  # S~ then split
        for f, s in zip(self.fs, self.strides):
            xt, xj = _down(xj, s), _down(xt, s) + f(xj)
        return jnp.concatenate([xj, xt], axis=-1)

    def inverse(self, z):
        """x from z = self(x), block by block in reverse (the paper's explicit inverse)."""
        xj, xt = jnp.split(z, 2, axis=-1)
        for f, s in reversed(list(zip(self.fs, self.strides))):
            prev = _up(xt, s)  # x_j
            xt, xj = _up(xj - f(prev), s), prev
        x = invertible_upsample(jnp.concatenate([xt, xj], axis=-1))
        return x[..., : x.shape[-1] - self.pad_channels] if self.pad_channels else x

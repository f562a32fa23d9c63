"""EDM2's magnitude-preserving layers.

Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 2
("Improving the training dynamics") and App. B; equation numbers are the appendix's, as the
authors' code cites them. Every layer keeps unit expected magnitude (RMS) for unit-magnitude
inputs, so the activations neither grow nor shrink through the network at any weight scale:

- `normalize`: x / (eps + RMS(x)) over the given axes (eps 1e-4, in float32); it and the
  per-output-channel `normalize_weight` live in netlab/nn/mp_normalize.py, shared with the
  optimizer.
- `MPConv` (Eq. 47, forced weight normalisation Eq. 66): no bias; the weight used in the forward
  pass is normalize(w) * gain / sqrt(fan_in), normalised per output channel, so every output
  channel's weight vector has norm `gain` and a white unit input gives a unit output whatever the
  stored weights' scale. Covers linear (`kernel_size=()`) and 2-D convolutions (NHWC).
- Forced weight normalisation of the *stored* weights and EDM2's inverse-square-root learning-rate
  decay are optimizer pieces: netlab/train/edm2_optim.py (`optimizer.forced_weight_norm=True`,
  `optimizer.schedule="inv_sqrt"`).
- `mp_silu` (Eq. 81): silu(x) / 0.596, the RMS of silu on N(0, 1).
- `mp_sum(a, b, t)` (Eq. 88): ((1-t) a + t b) / sqrt((1-t)^2 + t^2).
- `mp_cat(a, b, t)` (Eq. 103): concat [C (1-t)/sqrt(Na) a, C t/sqrt(Nb) b] with
  C = sqrt((Na + Nb) / ((1-t)^2 + t^2)); a and b contribute in the ratio (1-t) : t whatever
  their widths Na, Nb.
- `pixel_norm`: `normalize` over the channel axis (EDM2's replacement for group norms).

The U-Net built from these layers is `edm2_unet.py`.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn.mp_normalize import WEIGHT, normalize, normalize_weight
from netlab.sharding import axes

# The RMS of silu(x) for x ~ N(0, 1), as EDM2 rounds it (Eq. 81).
SILU_RMS = 0.596


def pixel_norm(x, eps: float = 1e-4):
    """Normalise every pixel's (token's) channel vector to unit RMS (NHWC: the last axis)."""
    return normalize(x, axis=-1, eps=eps)


def mp_silu(x):
    return jax.nn.silu(x) / SILU_RMS


def mp_sum(a, b, t: float = 0.5):
    """Blend a and b with weight t on b, keeping unit magnitude for independent unit inputs."""
    return ((1 - t) * a + t * b) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a, b, t: float = 0.5, axis: int = -1):
    """Concatenate along `axis` with the blend weights of Eq. 103 (t = weight of b)."""
    na, nb = a.shape[axis], b.shape[axis]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    wa, wb = c / math.sqrt(na) * (1 - t), c / math.sqrt(nb) * t
    return jnp.concatenate([wa * a, wb * b], axis=axis)


def used_weight(w, gain=1.0, eps: float = 1e-4):
    """The weight the forward pass uses: unit-RMS rows per output channel, times gain/sqrt(fan_in)
    (so each output channel's weight vector has norm `gain`)."""
    fan_in = math.prod(w.shape[:-1])
    return normalize_weight(w, eps=eps) * (gain / math.sqrt(fan_in))


class MPConv(nn.Module):
    """Magnitude-preserving linear (`kernel_size=()`) or 2-D convolution (NHWC, 'SAME').

    The stored weight `mp_weight` (..., in, out) starts N(0, 1); there is no bias. `gain` scales
    the output (EDM2 passes 0 for the zero-initialised output layer through a learned scalar)."""

    features: int
    kernel_size: Sequence[int] = ()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, gain=1.0):
        k = tuple(self.kernel_size)
        spec = (None,) * len(k) + (axes.CONV_IN, axes.CONV_OUT)
        w = self.param(
            WEIGHT,
            axes.param(nn.initializers.normal(1.0), *spec),
            k + (x.shape[-1], self.features),
            jnp.float32,
        )
        w = used_weight(w, gain).astype(self.dtype)
        x = x.astype(self.dtype)
        if not k:
            return x @ w
        return jax.lax.conv_general_dilated(
            x, w, (1,) * len(k), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

"""EDM2's magnitude-preserving layers and learning-rate decay.

Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 2
("Improving the training dynamics") and App. B; equation numbers are the appendix's, as the
authors' code cites them. Every layer keeps unit expected magnitude (RMS) for unit-magnitude
inputs, so the activations neither grow nor shrink through the network at any weight scale:

- `normalize`: x / (eps + RMS(x)) over the given axes (eps 1e-4, in float32).
- `MPConv` (Eq. 47, forced weight normalisation Eq. 66): no bias; the weight used in the forward
  pass is normalize(w) * gain / sqrt(fan_in), normalised per output channel, so every output
  channel's weight vector has norm `gain` and a white unit input gives a unit output whatever the
  stored weights' scale. Covers linear (`kernel_size=()`) and 2-D convolutions (NHWC).
- Forced weight normalisation of the *stored* weights: EDM2 overwrites w with normalize(w) in
  every training forward pass, which keeps the effective learning rate fixed. A Flax forward
  pass cannot write its parameters, so `forced_weight_norm()` is an optax transformation that
  projects every MP weight back to unit RMS rows after the update (chain it last; the trainer
  does with `optimizer.forced_weight_norm=True`). This differs from the authors' order
  (project, forward, step) only in when the projection happens: the forward pass sees the same
  normalised weights either way, and the EMA here averages projected rather than unprojected
  weights.
- `mp_silu` (Eq. 81): silu(x) / 0.596, the RMS of silu on N(0, 1).
- `mp_sum(a, b, t)` (Eq. 88): ((1-t) a + t b) / sqrt((1-t)^2 + t^2).
- `mp_cat(a, b, t)` (Eq. 103): concat [C (1-t)/sqrt(Na) a, C t/sqrt(Nb) b] with
  C = sqrt((Na + Nb) / ((1-t)^2 + t^2)); a and b contribute in the ratio (1-t) : t whatever
  their widths Na, Nb.
- `pixel_norm`: `normalize` over the channel axis (EDM2's replacement for group norms).
- `lr_decay`: alpha_ref / sqrt(max(t / t_ref, 1)), the inverse square root decay after t_ref
  that EDM2 pairs with forced weight normalisation, with its linear warm-up; an optax schedule
  (`optimizer.schedule="inv_sqrt"` with `optimizer.ref_steps`). The U-Net built from these
  layers is `edm2_unet.py`.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from netlab.sharding import axes

# The RMS of silu(x) for x ~ N(0, 1), as EDM2 rounds it (Eq. 81).
SILU_RMS = 0.596
WEIGHT = "mp_weight"  # the parameter name `forced_weight_norm` projects


def normalize(x, axis=None, eps: float = 1e-4):
    """x / (eps + RMS(x)) over `axis` (all axes if None), computed in float32 (or float64)."""
    dt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    xf = x.astype(dt)
    rms = jnp.sqrt(jnp.mean(jnp.square(xf), axis=axis, keepdims=True))
    return (xf / (eps + rms)).astype(x.dtype)


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


def _fan_in_axes(ndim):
    return tuple(range(ndim - 1))  # (..., in, out): every axis but the output channel


def used_weight(w, gain=1.0, eps: float = 1e-4):
    """The weight the forward pass uses: unit-RMS rows per output channel, times gain/sqrt(fan_in)
    (so each output channel's weight vector has norm `gain`)."""
    fan_in = math.prod(w.shape[:-1])
    return normalize(w, axis=_fan_in_axes(w.ndim), eps=eps) * (gain / math.sqrt(fan_in))


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


def forced_weight_norm() -> optax.GradientTransformation:
    """Chain last: turns the update u into normalize(params + u) - params for every `mp_weight`,
    so the stored weights stay at unit RMS per output channel (EDM2 Eq. 66). Other leaves pass."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("forced_weight_norm needs params (optax.apply_updates order)")

        def one(path, u, p):
            if getattr(path[-1], "key", None) != WEIGHT:
                return u
            return normalize(p + u, axis=_fan_in_axes(p.ndim)) - p

        out = jax.tree_util.tree_map_with_path(one, updates, params)
        return out, state

    return optax.GradientTransformation(init, update)


def lr_decay(ref_lr: float, ref_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """EDM2's learning rate at step t: ref_lr / sqrt(max(t / ref_steps, 1)) * min(t / warmup, 1).

    EDM2 counts t in training images (t_ref = ref_batches * batch); with a fixed batch size the
    same schedule in optimizer steps is ref_steps = ref_batches. `ref_steps=0` keeps ref_lr."""

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        lr = jnp.asarray(ref_lr, jnp.float32)
        if ref_steps > 0:
            lr = lr / jnp.sqrt(jnp.maximum(t / ref_steps, 1.0))
        if warmup_steps > 0:
            lr = lr * jnp.minimum(t / warmup_steps, 1.0)
        return lr

    return schedule

"""The weight normalisation of EDM2's magnitude-preserving layers, shared by the layers and the
optimizer (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", App. B; equation numbers are the appendix's, as the authors' code cites them).

- `normalize`: x / (eps + RMS(x)) over the given axes (eps 1e-4, in float32).
- `normalize_weight`: `normalize` of a kernel (..., in, out) over every axis but the output
  channel, so each output channel's row has unit RMS: the "forced weight normalisation" of
  Eq. 66 that the MP layers apply in the forward pass (netlab/diffusion/mp_layers.py) and the
  optimizer applies to the stored weights after each step (netlab/train/edm2_optim.py).
- `WEIGHT`: the parameter name of every MP kernel, by which the optimizer finds them.

It lives in `nn` because both the diffusion pillar and the trainer use it and the import contracts
let both import `nn` but forbid the trainer's code in a pillar.
"""

import jax.numpy as jnp

WEIGHT = "mp_weight"  # the parameter name of an MP kernel, which forced weight norm projects


def normalize(x, axis=None, eps: float = 1e-4):
    """x / (eps + RMS(x)) over `axis` (all axes if None), computed in float32 (or float64)."""
    dt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    xf = x.astype(dt)
    rms = jnp.sqrt(jnp.mean(jnp.square(xf), axis=axis, keepdims=True))
    return (xf / (eps + rms)).astype(x.dtype)


def fan_in_axes(ndim):
    return tuple(range(ndim - 1))  # (..., in, out): every axis but the output channel


def normalize_weight(w, eps: float = 1e-4):
    """Unit-RMS rows per output channel of a kernel (..., in, out) (EDM2 Eq. 66)."""
    return normalize(w, axis=fan_in_axes(w.ndim), eps=eps)

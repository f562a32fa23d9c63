"""SparseMixer-v2, the gradient estimator of GRIN (Liu et al. 2024, "GRIN: GRadient-INformed MoE",
§2 and Alg. 1; code: microsoft/SparseMixer `sparsemixer_v2`), for k = 1 or 2.

For each pick: mask the experts far below the best, M_i = (max_j z_j - z_i) / max(|z_i|, max_j z_j)
> 2·eps; z̃ = where(M, -inf, z); training samples e = argmax(z̃ + Gumbel) (eval: e = argmax z);
π = softmax(z̃). The forward weight is π_e·ω with ω = 1 when e is the argmax or with probability
1/4, else ω = 1/3 (the Heun third-order midpoint trick); the backward pass is ∂π_e/∂z with ω held
constant: w = π_e + stop_gradient(π_e·ω - π_e). The second pick masks the first to -inf.
This is a straight-through simplification of GRIN's custom backward (the paper's §2 estimator with
the midpoint weight held constant), not a port of the PyTorch autograd function.
"""

import jax
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe.registries import ROUTERS
from netlab.moe.routing import F32, TopK


def _pick(z, rng, train: bool, eps: float):
    zmax = jnp.max(z, -1, keepdims=True)
    factor = jnp.maximum(jnp.abs(z), zmax)
    masked = (zmax - z) / jnp.maximum(factor, 1e-9) > 2.0 * eps
    zt = jnp.where(masked, -jnp.inf, z)
    best = jnp.argmax(z, -1)
    if train:
        k1, k2 = jax.random.split(rng)
        gumbel = jax.random.gumbel(k1, z.shape, F32)
        e = jnp.argmax(zt + gumbel, -1)
    else:
        e = best
    pi = jax.nn.softmax(zt, -1)
    pe = jnp.take_along_axis(pi, e[..., None], -1)[..., 0]
    if train:
        u = jax.random.uniform(k2, e.shape, F32)
        omega = jnp.where((e == best) | (u > 0.75), 1.0, 1.0 / 3.0)
        pe = pe + jax.lax.stop_gradient(pe * omega - pe)
    return e, pe


def sparsemixer_v2_select(logits, k: int, rng, train: bool, eps: float = 0.1):
    """-> (probs (…, E), index (…, k), weight (…, k)); probs = softmax(z) for the balance loss."""
    if k not in (1, 2):
        raise UserError(f"k={k}: sparsemixer supports k=1 or k=2; use router='topk' for larger k")
    z = logits.astype(F32)
    rngs = jax.random.split(rng, k) if train else [None] * k
    idx, wts = [], []
    for j in range(k):
        e, w = _pick(z, rngs[j], train, eps)
        idx.append(e)
        wts.append(w)
        z = jnp.where(jax.nn.one_hot(e, z.shape[-1], dtype=bool), -jnp.inf, z)
    return (
        jax.nn.softmax(logits.astype(F32), -1),
        jnp.stack(idx, -1).astype(jnp.int32),
        jnp.stack(wts, -1),
    )


@ROUTERS.register("sparsemixer", "grin")
class SparseMixer(TopK):
    """Top-1 or top-2 token choice by SparseMixer-v2 (sampled in training, from the `router`
    rng)."""

    def check(self, layer, group_size=None):
        super().check(layer, group_size)
        if layer.k not in (1, 2):
            raise UserError(
                f"{layer.config_key}.k={layer.k}: sparsemixer supports k=1 or k=2; "
                f"use router='topk' for larger k"
            )

    def select(self, layer, logits, train):
        rng = layer.make_rng("router") if train else None
        return sparsemixer_v2_select(logits, layer.k, rng, train)

"""Soft MoE (Puigcerver et al. 2024, "From Sparse to Soft Mixtures of Experts", Alg. 1, eq. 1-3,
with the l2 normalisation of §2.3).

Logits L = X~ Phi~ with X~ = X/|X|, Phi~ = scale * Phi/|Phi| (norms over d); dispatch D = softmax
of L over the tokens of the group (each slot is a convex mix of tokens), combine C = softmax of L
over all (expert, slot) pairs (each output is a convex mix of slots). Every slot mixes every token
of the group, so it is not causal, and it needs slotted backends (`capacity`, `ep`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.registries import ROUTERS
from netlab.moe.routing import F32, Router, Routing, check_positive
from netlab.sharding import axes


def soft_moe_routing(x, phi, scale) -> Routing:
    """x: (G, S, d); phi: (d, E, P) slot parameters; scale: scalar."""
    xn = x.astype(F32) * jax.lax.rsqrt(jnp.sum(jnp.square(x.astype(F32)), -1, keepdims=True) + 1e-6)
    phin = phi.astype(F32) * jax.lax.rsqrt(
        jnp.sum(jnp.square(phi.astype(F32)), 0, keepdims=True) + 1e-6
    )
    logits = jnp.einsum("gsd,dep->gsep", xn, phin * scale)
    g, s, e, p = logits.shape
    dispatch = jax.nn.softmax(logits, axis=1)
    combine = jax.nn.softmax(logits.reshape(g, s, e * p), axis=-1).reshape(g, s, e, p)
    expert_logits = jax.scipy.special.logsumexp(logits, axis=-1)
    return Routing(
        dispatch=dispatch,
        combine=combine,
        probs=jax.nn.softmax(expert_logits, -1),
        logits=expert_logits,
    )


@ROUTERS.register("soft", "soft_moe")
class SoftMoE(Router):
    """`soft_slots` slots per expert; parameters `phi` (d, E, P) and `scale`."""

    token_choice = False
    causal = False
    backends = ("capacity", "ep")

    def check(self, layer, group_size=None):
        check_positive(f"{layer.config_key}.soft_slots", layer.soft_slots, integer=True)

    def route(self, layer, x, train):
        d, e = x.shape[-1], layer.num_experts
        init = nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        phi = layer.param("phi", axes.param(init, axes.EMBED, None, None), (d, e, layer.soft_slots))
        scale = layer.param("scale", nn.initializers.ones, ())
        return soft_moe_routing(x, phi, scale)

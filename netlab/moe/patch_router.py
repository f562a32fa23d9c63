"""The pMoE patch-level router (Chowdhury et al. 2023, "Patch-level Routing in Mixture-of-Experts is
Provably Sample-efficient for Convolutional Neural Networks", ICML, §2: the router J_s and the
gating G_{j,s} of eq. 2-3).

Expert s has its own routing vector w_s and ranks the n patches x^(j) of an image by its OWN score
w_s^T x^(j) (no softmax over experts), keeping the top l:

    J_s(w_s, x) = top-l indices of {w_s^T x^(j)}_{j=1..n}
    G_{j,s}(w_s, x) = exp(w_s^T x^(j)) / sum_{i in J_s} exp(w_s^T x^(i))   for j in J_s

so each expert processes exactly l patches, weighted by a softmax over the l selected patches. The
generic expert-choice router (`expert_choice.py`, Zhou et al. 2022) ranks by the softmax over
experts instead, so an expert's choice there also depends on the other experts' scores: with two
experts aligned to the same pattern, the weaker one is pushed off the pattern's patches.

`probs` (softmax over experts of the scores) is only for the layer's metrics; the paper has no
auxiliary loss (every expert is full by construction), so the pMoE configs weight none.
"""

import jax
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe.registries import ROUTERS
from netlab.moe.routing import F32, Router, Routing, router_logits, top_k


def patch_level_routing(scores, l: int) -> Routing:
    """scores (G, N, E) = w_s^T x^(j) -> Routing with dispatch/combine (G, N, E, l)."""
    scores = scores.astype(F32)
    g, n, e = scores.shape
    if l > n:
        raise UserError(f"pMoE keeps l={l} patches per expert but an image has only {n}")
    top, patch = top_k(jnp.swapaxes(scores, 1, 2), l)  # (G, E, l): J_s, ranked by w_s^T x
    gate = jax.nn.softmax(top, axis=-1)  # G_{j,s}: softmax over the l selected patches
    dispatch = jnp.transpose(jax.nn.one_hot(patch, n, dtype=F32), (0, 3, 1, 2))  # (G, N, E, l)
    combine = dispatch * gate[:, None]
    return Routing(
        dispatch=dispatch, combine=combine, probs=jax.nn.softmax(scores, -1), logits=scores
    )


@ROUTERS.register("pmoe", "patch_level")
class PatchLevel(Router):
    """Each expert keeps l = `expert_capacity` patches (the pMoE model sets it to
    `patches_per_expert`) by its own score, gated by a softmax over them."""

    token_choice = False
    causal = False
    backends = ("dense", "capacity", "ep")

    def check(self, layer, group_size=None):
        if not layer.expert_capacity:
            raise UserError(
                f"{layer.config_key}.expert_capacity is required by router='pmoe' (the number "
                f"l of patches each expert keeps); set it, or use model.name='pmoe'"
            )
        if group_size is not None and layer.expert_capacity > group_size:
            raise UserError(
                f"{layer.config_key}.expert_capacity={layer.expert_capacity}: router='pmoe' "
                f"keeps that many patches per expert but a group has only {group_size}"
            )

    def route(self, layer, x, train):
        return patch_level_routing(router_logits(layer, x), int(layer.expert_capacity))

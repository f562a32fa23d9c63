"""Expert choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing", §3.2).

S = softmax(X W_g), G, I = TopK(S^T, k=C): each expert takes the C highest-scoring tokens of the
group; dispatch P = onehot(I), combine = G * P. Every expert is exactly full and a token may get
0..E experts. An expert's choice depends on every token of the group, so it is not causal: do not
use it in an autoregressive decoder (the MoE LM refuses it).
"""

import jax
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe.registries import ROUTERS
from netlab.moe.routing import F32, Router, Routing, router_logits, top_k


def expert_choice_routing(logits, capacity_: int) -> Routing:
    """logits (G, S, E) -> Routing with dispatch/combine (G, S, E, C) and no per-token index."""
    logits = logits.astype(F32)
    g, s, e = logits.shape
    if capacity_ > s:
        raise UserError(
            f"expert-choice capacity {capacity_} exceeds the group size {s}; "
            f"lower the capacity factor"
        )
    probs = jax.nn.softmax(logits, axis=-1)
    gate, token = top_k(jnp.swapaxes(probs, 1, 2), capacity_)  # (G, E, C)
    onehot = jax.nn.one_hot(token, s, dtype=F32)  # (G, E, C, S)
    dispatch = jnp.transpose(onehot, (0, 3, 1, 2))  # (G, S, E, C)
    combine = dispatch * gate[:, None]
    return Routing(dispatch=dispatch, combine=combine, probs=probs, logits=logits)


@ROUTERS.register("expert_choice")
class ExpertChoice(Router):
    """C = capacity(S, E, k, capacity_factor) slots per expert (or `expert_capacity`)."""

    token_choice = False
    causal = False
    backends = ("dense", "capacity", "ep")

    def check(self, layer, group_size=None):
        if group_size is None:
            return
        for train in (True, False):
            c = layer.capacity(group_size, train)
            if c > group_size:
                field = (
                    "expert_capacity"
                    if layer.expert_capacity
                    else ("capacity_factor" if train else "eval_capacity_factor")
                )
                raise UserError(
                    f"{layer.config_key}.{field}: expert-choice capacity {c} exceeds "
                    f"the group size {group_size}; lower it"
                )

    def route(self, layer, x, train):
        return expert_choice_routing(router_logits(layer, x), layer.capacity(x.shape[1], train))

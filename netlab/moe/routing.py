"""The router interface and the routers: every router returns one `Routing`.

A `Routing` describes where each token of a group goes, in the form every dispatch backend reads:

- `dispatch` (G, S, E, C): how much of token s enters slot c of expert e's buffer (0/1 for the
  sparse routers, a softmax over tokens for Soft MoE);
- `combine` (G, S, E, C): how much of slot (e, c)'s output returns to token s;
- `index`, `weight` (G, S, k): the token-choice assignment before any capacity limit (the dropless
  backends use these; `None` for expert choice and Soft MoE);
- `probs`, `logits` (G, S, E): float32 router probabilities and logits for the auxiliary losses.

Tokens are grouped (G groups of S tokens; a group is a sequence or an image's patches). Capacity,
slot order and Batch Priority Routing act inside a group, so a group never waits on another device.
All router math runs in float32 whatever the compute dtype.
"""
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

F32 = jnp.float32


@struct.dataclass
class Routing:
    dispatch: Optional[jax.Array]        # None for dropless backends: no slots, nothing drops
    combine: Optional[jax.Array]
    probs: jax.Array
    logits: jax.Array
    index: Optional[jax.Array] = None
    weight: Optional[jax.Array] = None

    @property
    def num_experts(self) -> int:
        return self.dispatch.shape[2]

    @property
    def capacity(self) -> int:
        return self.dispatch.shape[3]

    def gates(self) -> jax.Array:
        """(G, S, E) combine weight of each expert for each token after capacity (hard routers)."""
        if self.combine is None:
            return jnp.einsum("gsk,gske->gse", self.weight, jax.nn.one_hot(self.index, self.probs.shape[-1], dtype=F32))
        return self.combine.sum(-1)


def capacity(group_size: int, num_experts: int, k: float, capacity_factor: Optional[float], multiple: int = 4) -> int:
    """Slots per expert per group: C = round_up(ceil(k * S * cf / E), multiple), at most S.

    `capacity_factor=None` means no token is ever dropped (C = S: a token visits an expert at most
    once). V-MoE's formula (Riquelme et al. 2021, §2.2) with rounding to a multiple of 4.
    """
    if capacity_factor is None:
        return group_size
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor={capacity_factor}; use a positive number, or None for no drops")
    c = math.ceil(k * group_size * capacity_factor / num_experts)
    c = multiple * math.ceil(c / multiple) if multiple > 1 else c
    return int(max(1, min(c, group_size)))


def check_top_k(k: int, num_experts: int):
    if not 1 <= k <= num_experts:
        raise ValueError(f"top-k k={k} must be between 1 and num_experts={num_experts}; lower k or add experts")


# --------------------------------------------------------------------------------------------------
# Token choice


def top_k(x, k: int):
    """(values, indices) of the k largest entries along the last axis, ties to the lower index.

    Not `jax.lax.top_k`: XLA's SPMD partitioner splits reductions and sorts along their batch
    dimensions, while the TopK custom call made it all-gather the router logits across devices.
    For small k (routers: k <= 8), k rounds of argmax-and-mask, O(k E) per token; a full sort costs
    O(E log E) and dominated the CPU step at 64 experts (12 ms of a 27 ms MoE layer). Larger k
    (expert choice picks C tokens) takes a stable sort.
    """
    if k > 8 or not jnp.issubdtype(x.dtype, jnp.floating):
        idx = jnp.argsort(-x, axis=-1, stable=True)[..., :k]
        return jnp.take_along_axis(x, idx, axis=-1), idx
    rank = jnp.maximum(x, jnp.finfo(x.dtype).min)       # an untaken -inf still beats a taken entry
    taken = jnp.zeros(x.shape, bool)
    idx = []
    for _ in range(k):
        idx.append(jnp.argmax(jnp.where(taken, -jnp.inf, rank), axis=-1))
        taken = taken | (jnp.arange(x.shape[-1]) == idx[-1][..., None])
    idx = jnp.stack(idx, axis=-1)
    return jnp.take_along_axis(x, idx, axis=-1), idx


def top_k_select(logits, k: int, *, renormalize: bool = False, bias=None):
    """Top-k token choice: `index = topk(p + b, k)`, `weight = p[index]`, p = softmax(z).

    Switch Transformer (Fedus et al. 2021, eq. 1-2) for k=1; GShard (Lepikhin et al. 2020, Alg. 1)
    for k=2; `renormalize` divides the k weights by their sum (Mixtral / MaxText: softmax over the
    k logits). `bias` (E,) only changes which experts are chosen, never the weights: the
    auxiliary-loss-free balancing of DeepSeek-V3 (Liu et al. 2024, eq. 16-17), see `balance_bias`.
    """
    logits = logits.astype(F32)
    check_top_k(k, logits.shape[-1])
    probs = jax.nn.softmax(logits, axis=-1)
    scores = probs if bias is None else probs + jax.lax.stop_gradient(bias.astype(F32))
    _, index = top_k(scores, k)
    weight = jnp.take_along_axis(probs, index, axis=-1)
    if renormalize:
        weight = weight / jnp.sum(weight, axis=-1, keepdims=True)
    return probs, index, weight


def slot_positions(index, num_experts: int, priority=None):
    """Slot of each assignment in its expert's buffer (G, S, k), filled k-major: all first choices
    (in token order, or in `priority` order when given) before any second choice.

    `priority` (G, S): higher goes first — Batch Priority Routing (Riquelme et al. 2021, V-MoE §3.1)
    passes each token's top routing weight, so under overload the least confident tokens drop.
    """
    g, s, k = index.shape
    if priority is not None:
        order = jnp.argsort(-priority, axis=1, stable=True)          # (G, S): rank -> token
        index = jnp.take_along_axis(index, order[..., None], axis=1)
    onehot = jax.nn.one_hot(index, num_experts, dtype=jnp.int32)     # (G, S, k, E)
    kmajor = jnp.swapaxes(onehot, 1, 2).reshape(g, k * s, num_experts)
    pos = jnp.cumsum(kmajor, axis=1) - 1
    pos = jnp.sum(pos * kmajor, axis=-1).reshape(g, k, s)
    pos = jnp.swapaxes(pos, 1, 2)                                    # (G, S, k) in (possibly sorted) order
    if priority is not None:
        inverse = jnp.argsort(order, axis=1)
        pos = jnp.take_along_axis(pos, inverse[..., None], axis=1)
    return pos


def without_slots(probs, logits, index, weight) -> Routing:
    """A token-choice assignment for the dropless backends, which need no (G, S, E, C) slot tensors."""
    return Routing(dispatch=None, combine=None, probs=probs, logits=logits.astype(F32), index=index, weight=weight)


def assign_slots(probs, logits, index, weight, capacity_: int, *, bpr: bool = False) -> Routing:
    """Turn a token-choice assignment into dispatch/combine tensors with `capacity_` slots per expert.

    Assignments beyond the capacity are dropped (their token skips that expert; the residual
    connection carries it). GShard (Lepikhin et al. 2020, Alg. 1) slot logic, BPR optional.
    """
    num_experts = probs.shape[-1]
    priority = jnp.max(weight, axis=-1) if bpr else None
    pos = slot_positions(index, num_experts, priority)
    kept = (pos < capacity_).astype(F32)
    e_hot = jax.nn.one_hot(index, num_experts, dtype=F32)            # (G, S, k, E)
    c_hot = jax.nn.one_hot(pos, capacity_, dtype=F32)                 # zero when pos >= C
    dispatch = jnp.einsum("gske,gskc->gsec", e_hot * kept[..., None], c_hot)
    combine = jnp.einsum("gske,gskc->gsec", e_hot * (weight * kept)[..., None], c_hot)
    return Routing(dispatch=dispatch, combine=combine, probs=probs, logits=logits.astype(F32),
                   index=index, weight=weight)


def top_k_routing(logits, k: int, capacity_: int, *, renormalize=False, bpr=False, bias=None) -> Routing:
    """Top-k token choice with a capacity limit and optional Batch Priority Routing (see above)."""
    probs, index, weight = top_k_select(logits, k, renormalize=renormalize, bias=bias)
    return assign_slots(probs, logits, index, weight, capacity_, bpr=bpr)


# --------------------------------------------------------------------------------------------------
# Expert choice


def expert_choice_routing(logits, capacity_: int) -> Routing:
    """Expert choice: each expert takes its `capacity_` highest-scoring tokens of the group.

    Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing", §3.2: S = softmax(X·W_g),
    G, I = TopK(Sᵀ, k=C); dispatch P = onehot(I); combine = G ⊙ P. Every expert is exactly full;
    a token may get 0..E experts. Not causal: do not use in autoregressive decoders.
    """
    logits = logits.astype(F32)
    g, s, e = logits.shape
    if capacity_ > s:
        raise ValueError(f"expert-choice capacity {capacity_} exceeds the group size {s}; lower capacity_factor")
    probs = jax.nn.softmax(logits, axis=-1)
    gate, token = top_k(jnp.swapaxes(probs, 1, 2), capacity_)           # (G, E, C)
    onehot = jax.nn.one_hot(token, s, dtype=F32)                          # (G, E, C, S)
    dispatch = jnp.transpose(onehot, (0, 3, 1, 2))                        # (G, S, E, C)
    combine = dispatch * gate[:, None]
    return Routing(dispatch=dispatch, combine=combine, probs=probs, logits=logits)


# --------------------------------------------------------------------------------------------------
# Soft MoE


def soft_moe_routing(x, phi, scale) -> Routing:
    """Soft MoE (Puigcerver et al. 2024, "From Sparse to Soft Mixtures of Experts", Alg. 1, eq. 1-3,
    with the l2 normalisation of §2.3): logits L = X̃ Φ̃ with X̃ = X/‖X‖, Φ̃ = scale·Φ/‖Φ‖ (over d);
    dispatch D = softmax of L over the tokens of the group (each slot is a convex mix of tokens),
    combine C = softmax of L over all (expert, slot) pairs (each output a convex mix of slots).

    x: (G, S, d); phi: (d, E, P) slot parameters; scale: scalar.
    """
    xn = x.astype(F32) * jax.lax.rsqrt(jnp.sum(jnp.square(x.astype(F32)), -1, keepdims=True) + 1e-6)
    phin = phi.astype(F32) * jax.lax.rsqrt(jnp.sum(jnp.square(phi.astype(F32)), 0, keepdims=True) + 1e-6)
    logits = jnp.einsum("gsd,dep->gsep", xn, phin * scale)
    g, s, e, p = logits.shape
    dispatch = jax.nn.softmax(logits, axis=1)
    combine = jax.nn.softmax(logits.reshape(g, s, e * p), axis=-1).reshape(g, s, e, p)
    expert_logits = jax.scipy.special.logsumexp(logits, axis=-1)
    return Routing(dispatch=dispatch, combine=combine, probs=jax.nn.softmax(expert_logits, -1), logits=expert_logits)

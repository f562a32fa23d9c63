"""The router interface, the `Routing` every router returns, and top-k token choice.

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

A router is a `Router` subclass registered in `netlab.moe.registries.ROUTERS`; it creates its
parameters inside the MoE layer it is given (`layer.param`), so they live next to the experts.
Top-k token choice is here; expert choice, Soft MoE, SMEAR, HyperRouter, SparseMixer-v2 and the
auxiliary-loss-free bias each have their own file.
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from netlab.errors import UserError
from netlab.moe.registries import ROUTERS
from netlab.registry import check_range
from netlab.sharding import axes

F32 = jnp.float32


@struct.dataclass
class Routing:
    dispatch: Optional[jax.Array]  # None for dropless backends: no slots, nothing drops
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
        """(G, S, E) combine weight of each expert for each token after capacity (hard routers);
        the router probabilities when there is neither (SMEAR merges the experts instead)."""
        if self.combine is not None:
            return self.combine.sum(-1)
        if self.index is None:
            return self.probs
        onehot = jax.nn.one_hot(self.index, self.probs.shape[-1], dtype=F32)
        return jnp.einsum("gsk,gske->gse", self.weight, onehot)


def capacity(
    group_size: int, num_experts: int, k: float, capacity_factor: Optional[float], multiple: int = 4
) -> int:
    """Slots per expert per group: C = round_up(ceil(k * S * cf / E), multiple), at most S.

    `capacity_factor=None` means no token is ever dropped (C = S: a token visits an expert at most
    once). V-MoE's formula (Riquelme et al. 2021, §2.2) with rounding to a multiple of 4.
    """
    if capacity_factor is None:
        return group_size
    if capacity_factor <= 0:
        raise UserError(
            f"capacity_factor={capacity_factor}; use a positive number, or None (or a "
            f"value <= 0 in a config) for no drops"
        )
    c = math.ceil(k * group_size * capacity_factor / num_experts)
    c = multiple * math.ceil(c / multiple) if multiple > 1 else c
    return int(max(1, min(c, group_size)))


def check_top_k(k: int, num_experts: int, key: str = "k"):
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_experts:
        raise UserError(
            f"{key}={k!r}: top-k needs an integer k between 1 and "
            f"num_experts={num_experts}; lower k or add experts"
        )


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
    rank = jnp.maximum(x, jnp.finfo(x.dtype).min)  # an untaken -inf still beats a taken entry
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
    auxiliary-loss-free balancing of DeepSeek-V3 (Liu et al. 2024, eq. 16-17), see loss_free.py.
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


def slot_positions(index, num_experts: int, priority=None, causal: bool = False):
    """Slot of each assignment in its expert's buffer (G, S, k).

    Encoders (default): filled k-major, all first choices (in token order, or in `priority` order
    when given) before any second choice, so top-1 fills the buffers first (V-MoE, Flaxformer).
    `priority` (G, S): higher goes first — Batch Priority Routing (Riquelme et al. 2021, V-MoE
    §3.1) passes each token's top routing weight, so under overload the least confident tokens drop.

    `causal` (decoders): filled token-major, token by token and choice by choice within a token
    (MaxText's dropping order), so whether token s keeps a slot depends only on tokens <= s. The
    k-major order lets a later token's first choice take the slot of an earlier token's second
    choice, and BPR lets a later, more confident token take it: both leak the future into a causal
    LM's logits. No priority with `causal`.
    """
    g, s, k = index.shape
    if causal:
        if priority is not None:
            raise ValueError("causal slot filling takes no priority (BPR sees later tokens)")
        onehot = jax.nn.one_hot(index, num_experts, dtype=jnp.int32).reshape(g, s * k, -1)
        pos = jnp.cumsum(onehot, axis=1) - 1
        return jnp.sum(pos * onehot, axis=-1).reshape(g, s, k)
    if priority is not None:
        order = jnp.argsort(-priority, axis=1, stable=True)  # (G, S): rank -> token
        index = jnp.take_along_axis(index, order[..., None], axis=1)
    onehot = jax.nn.one_hot(index, num_experts, dtype=jnp.int32)  # (G, S, k, E)
    kmajor = jnp.swapaxes(onehot, 1, 2).reshape(g, k * s, num_experts)
    pos = jnp.cumsum(kmajor, axis=1) - 1
    pos = jnp.sum(pos * kmajor, axis=-1).reshape(g, k, s)
    pos = jnp.swapaxes(pos, 1, 2)  # (G, S, k) in (possibly sorted) order
    if priority is not None:
        inverse = jnp.argsort(order, axis=1)
        pos = jnp.take_along_axis(pos, inverse[..., None], axis=1)
    return pos


def without_slots(probs, logits, index, weight) -> Routing:
    """A token-choice assignment for the dropless backends, which need no (G, S, E, C) slot
    tensors."""
    return Routing(
        dispatch=None,
        combine=None,
        probs=probs,
        logits=logits.astype(F32),
        index=index,
        weight=weight,
    )


def assign_slots(
    probs, logits, index, weight, capacity_: int, *, bpr: bool = False, causal: bool = False
) -> Routing:
    """Turn a token-choice assignment into dispatch/combine tensors, `capacity_` slots per expert.

    Assignments beyond the capacity are dropped (their token skips that expert; the residual
    connection carries it). GShard (Lepikhin et al. 2020, Alg. 1) slot logic, BPR optional;
    `causal` fills the slots in token order (decoders, see `slot_positions`).
    """
    num_experts = probs.shape[-1]
    priority = jnp.max(weight, axis=-1) if bpr else None
    pos = slot_positions(index, num_experts, priority, causal)
    kept = (pos < capacity_).astype(F32)
    e_hot = jax.nn.one_hot(index, num_experts, dtype=F32)  # (G, S, k, E)
    c_hot = jax.nn.one_hot(pos, capacity_, dtype=F32)  # zero when pos >= C
    dispatch = jnp.einsum("gske,gskc->gsec", e_hot * kept[..., None], c_hot)
    combine = jnp.einsum("gske,gskc->gsec", e_hot * (weight * kept)[..., None], c_hot)
    return Routing(
        dispatch=dispatch,
        combine=combine,
        probs=probs,
        logits=logits.astype(F32),
        index=index,
        weight=weight,
    )


def top_k_routing(
    logits, k: int, capacity_: int, *, renormalize=False, bpr=False, bias=None, causal=False
) -> Routing:
    """Top-k token choice with a capacity limit and optional Batch Priority Routing (see above)."""
    probs, index, weight = top_k_select(logits, k, renormalize=renormalize, bias=bias)
    return assign_slots(probs, logits, index, weight, capacity_, bpr=bpr, causal=causal)


# --------------------------------------------------------------------------------------------------
# The router interface


class Router:
    """How a MoE layer picks experts. Subclasses register in ROUTERS and set:

    token_choice: `route` returns (index, weight) without slots; the layer fits them into
        capacity slots when the backend needs slots. Otherwise `route` fills dispatch/combine.
    causal: each token's routing reads that token only, so a causal LM may use it (expert
        choice, Soft MoE and SMEAR mix the tokens of a sequence and would leak future tokens).
    backends: the backend names it works with (None: every backend).
    """

    token_choice = True
    causal = True
    backends: Optional[tuple] = None

    def check(self, layer, group_size: Optional[int] = None) -> None:
        """One-line UserErrors (naming `layer.config_key`.<field>) for this router's fields."""
        if self.token_choice:
            check_top_k(layer.k, layer.num_experts, f"{layer.config_key}.k")

    def route(self, layer, x, train: bool) -> Routing:
        raise NotImplementedError

    def apply_experts(self, layer, routing: Routing, x, w, run):
        """y from the routing; `run(routing, x, w)` is the layer's dispatch backend."""
        return run(routing, x, w)


def router_logits(layer, x):
    """z = x W_r (float32) with the layer's `router` parameter (d, E), initialised N(0, 0.02^2)."""
    d, e = x.shape[-1], layer.num_experts
    wr = layer.param("router", axes.param(nn.initializers.normal(0.02), axes.EMBED, None), (d, e))
    return jnp.einsum("gsd,de->gse", x.astype(F32), wr.astype(F32))


@ROUTERS.register("topk", "top_k")
class TopK(Router):
    """Top-k token choice with softmax weights (Switch k=1, GShard k=2; `renormalize` divides the k
    weights by their sum), a capacity per expert (`capacity_factor`) and optional Batch Priority
    Routing (`bpr`), both applied by the layer for slotted backends (`assign_slots`)."""

    def logits(self, layer, x):
        return router_logits(layer, x)

    def select(self, layer, logits, train):
        return top_k_select(logits, layer.k, renormalize=layer.renormalize)

    def route(self, layer, x, train):
        logits = self.logits(layer, x)
        probs, index, weight = self.select(layer, logits, train)
        return without_slots(probs, logits, index, weight)


def check_positive(key: str, value, integer: bool = False):
    """A field that must be > 0 (a one-line UserError otherwise)."""
    check_range(key, value, 0, None, integer=integer)
    if value <= 0:
        raise UserError(
            f"{key}={value!r}: expected a positive {'integer' if integer else 'number'}"
        )

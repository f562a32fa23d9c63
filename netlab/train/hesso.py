"""HESSO, the Hybrid Efficient Structured Sparse Optimizer of Chen et al. 2023/2024, "OTOv3:
Automatic Architecture-Agnostic Neural Network Training and Compression from Structured Pruning to
Erasing Operators" and "HESSO: Towards Automatic Efficient and User Friendly Any Neural Network
Training and Pruning", as an optax `GradientTransformation`.

Structured pruning works on zero-invariant groups (ZIGs): sets of parameters (e.g. a unit's
incoming weights and its bias) such that when all are zero the unit's output is zero, so the unit
can be removed without changing the network. HESSO trains in phases:

1. Warm-up (`warmup_steps`): the base optimiser alone.
2. Hybrid phase: `periods` pruning periods of `period_length` steps. At the start of period k the
   groups with the smallest saliency (here the group's RMS magnitude ||x_g|| / sqrt(|g|); the
   paper combines several saliency scores) among those still important are marked redundant, so
   that ceil(target_sparsity * G * (k + 1) / periods) groups are redundant after it (the target
   is reached progressively). A redundant group is forgotten progressively over its period:
   x_g <- x_g (1 - 1 / r) with r the steps left in the period, so it reaches exactly zero at the
   period's end and stays zero afterwards; important groups follow the base optimiser unchanged.
3. After the last period: the base optimiser on the important groups, redundant groups held at 0.

Deliberate simplification: the paper's redundant-group update also carries a (damped) gradient
term during forgetting; here a redundant group only decays (its gradient is dropped), which
keeps the exact-zero guarantee simple. The base optimiser still sees every gradient, so its
update of an important group is exactly what it would have been alone (element-wise optimisers).

Groups: `groups(params)` returns (group_ids, G), group_ids a pytree like the params whose leaves
are int arrays of the leaf's shape giving each entry's group (-1: in no group, never pruned). The
default `output_unit_groups(params)` is the common choice for Dense/Conv stacks: the slice
[..., j] of every kernel together with entry j of the bias next to it is one group. (A unit
followed by a normalisation layer is zero-invariant only with that layer's entries in its group:
pass your own `groups` then.)

Selectable from a config: `optimizer.hesso_sparsity` (0: off) with `hesso_warmup`,
`hesso_periods`, `hesso_period_length` (`netlab.train.optim.build` wraps the chosen optimiser).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.errors import UserError
from netlab.registry import check_range


class HessoState(NamedTuple):
    base: optax.OptState
    count: jax.Array
    redundant: jax.Array  # (G,) bool
    start: jax.Array  # (G,) int32: step at which the group was marked redundant


def output_unit_groups(params):
    """One group per output unit of each kernel (ndim >= 2) with the bias next to it (same parent
    dict, key 'bias'); other leaves in no group. Returns (group_ids, num_groups)."""
    # paths without attribute steps: boxed leaves (nn.Partitioned(...).value) name like plain ones
    flat = [
        (tuple(k for k in path if not isinstance(k, jax.tree_util.GetAttrKey)), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    ids, offset, parents = {}, 0, {}
    for path, leaf in flat:
        if np.ndim(leaf) >= 2:
            n = leaf.shape[-1]
            ids[path] = np.broadcast_to(np.arange(offset, offset + n, dtype=np.int32), leaf.shape)
            parents[path[:-1]] = (offset, n)
            offset += n
    for path, leaf in flat:
        if path not in ids:
            key = getattr(path[-1], "key", None)
            parent = parents.get(path[:-1])
            if key == "bias" and parent and np.shape(leaf) == (parent[1],):
                ids[path] = np.arange(parent[0], parent[0] + parent[1], dtype=np.int32)
            else:
                ids[path] = np.full(np.shape(leaf), -1, np.int32)
    treedef = jax.tree_util.tree_structure(params)
    return jax.tree_util.tree_unflatten(treedef, [ids[p] for p, _ in flat]), offset


def hesso(
    base: optax.GradientTransformation,
    target_sparsity: float,
    warmup_steps: int,
    periods: int,
    period_length: int,
    groups=output_unit_groups,
) -> optax.GradientTransformation:
    """`groups(params) -> (group_ids, num_groups)` (only the params' structure and shapes are
    read), `output_unit_groups` unless given."""
    if not 0 <= target_sparsity < 1 or periods < 1 or period_length < 1:
        raise UserError(
            f"optimizer.hesso_sparsity={target_sparsity} (need [0, 1)), hesso_periods={periods}, "
            f"hesso_period_length={period_length} (need >= 1)"
        )

    def layout(params):
        group_ids, num_groups = groups(params)
        ids = [jnp.asarray(i) for i in jax.tree.leaves(group_ids)]
        sizes = np.zeros(num_groups)
        for i in jax.tree.leaves(group_ids):
            sizes += np.bincount(np.asarray(i)[np.asarray(i) >= 0].ravel(), minlength=num_groups)
        targets = [
            math.ceil(target_sparsity * num_groups * (k + 1) / periods) for k in range(periods)
        ]
        return ids, num_groups, sizes, jnp.asarray(targets)

    def entry_mask(redundant, ids):
        return (ids >= 0) & redundant[jnp.clip(ids, 0)]

    def init(params):
        num_groups = layout(params)[1]
        return HessoState(
            base.init(params),
            jnp.zeros((), jnp.int32),
            jnp.zeros(num_groups, bool),
            jnp.zeros(num_groups, jnp.int32),
        )

    def update(grads, state, params):
        updates, base_state = base.update(grads, state.base, params)
        ids_leaves, num_groups, sizes, targets = layout(params)
        t = state.count
        leaves = jax.tree.leaves(params)
        sq = sum(
            jax.ops.segment_sum(
                jnp.where(i >= 0, jnp.square(p.astype(jnp.float32)), 0).ravel(),
                jnp.clip(i, 0).ravel(),
                num_groups,
            )
            for p, i in zip(leaves, ids_leaves)
        )
        saliency = jnp.where(state.redundant, jnp.inf, jnp.sqrt(sq / np.maximum(sizes, 1)))
        k = (t - warmup_steps) // period_length
        boundary = (t >= warmup_steps) & ((t - warmup_steps) % period_length == 0) & (k < periods)
        need = targets[jnp.clip(k, 0, periods - 1)] - jnp.sum(state.redundant)
        rank = jnp.argsort(jnp.argsort(saliency))
        new = boundary & ~state.redundant & (rank < need)
        redundant = state.redundant | new
        start = jnp.where(new, t, state.start)
        left = start + period_length - t  # steps left in the group's forgetting period
        factor = jnp.where(left >= 1, 1.0 / jnp.maximum(left, 1), 1.0)
        out = []
        for u, p, i in zip(jax.tree.leaves(updates), leaves, ids_leaves):
            f = factor[jnp.clip(i, 0)].astype(p.dtype)
            out.append(jnp.where(entry_mask(redundant, i), -p * f, u))
        updates = jax.tree.unflatten(jax.tree.structure(updates), out)
        return updates, HessoState(base_state, t + 1, redundant, start)

    return optax.GradientTransformation(init, update)


def from_config(core, opt_cfg, total_steps: int) -> optax.GradientTransformation:
    """`optimizer.hesso_*` keys -> `hesso(core, ...)`; the periods must end within training."""
    sparsity = check_range("optimizer.hesso_sparsity", opt_cfg.hesso_sparsity, 0, 0.99)
    warmup = check_range("optimizer.hesso_warmup", opt_cfg.get("hesso_warmup", 0), 0, integer=True)
    periods = check_range(
        "optimizer.hesso_periods", opt_cfg.get("hesso_periods", 5), 1, integer=True
    )
    length = check_range(
        "optimizer.hesso_period_length", opt_cfg.get("hesso_period_length", 20), 1, integer=True
    )
    if warmup + periods * length > total_steps:
        raise UserError(
            f"optimizer.hesso_warmup + hesso_periods * hesso_period_length = "
            f"{warmup + periods * length} > {total_steps} training steps: shorten them"
        )
    return hesso(core, sparsity, warmup, periods, length)

"""Dispatch backends: how tokens reach the stacked experts and come back, and the one dispatcher.

Every backend computes, for the same `Routing`,

    y_s = sum_e sum_c combine[s, e, c] * FFN_e(sum_s' dispatch[s', e, c] * x_s')

and differs only in how (and how much) it computes and communicates:

- `dense`: every expert on every token, weighted by the gates (the reference; E times the FLOPs).
- `capacity`: one-hot einsum into (G, E, C, d) buffers, constrained first like the tokens
  (batch, ...) and then to (expert_group, expert, ...): with rules expert->'expert' and
  expert_group->('data', 'fsdp'), the sharding moves from the batch axes to the expert axis and
  XLA inserts the all-to-all (GShard, Lepikhin et al. 2020, §3.2).
- `dropless`: sort the token->expert assignments by expert and run grouped matmuls
  (`netlab.moe.grouped`: `jax.lax.ragged_dot` on accelerators, MegaBlocks-style padded blocks on
  CPU, where XLA's ragged dot costs one dense matmul per expert): nothing drops.
- `ep`: explicit expert parallelism in `jax.shard_map`: local dispatch, `all_to_all` over the
  expert mesh axis, local experts, `all_to_all` back, local combine. Buffers are padded to the
  capacity, so it runs everywhere, XLA:CPU included.
- `ep_ragged` (ragged.py): dropless expert parallelism with `ragged_all_to_all` (accelerators).

`choose` is the one place that picks the backend that actually runs: a backend's `fallback` names
another with the same numbers where it cannot run (no expert mesh axis: `ep` -> `capacity`,
`ep_ragged` -> `dropless`; XLA:CPU: `ep_ragged` -> `ep` with a capacity that drops nothing).
"""

import jax
import jax.numpy as jnp

from netlab.moe import experts, grouped
from netlab.moe.registries import BACKENDS
from netlab.sharding import axes

# Logical name of the group axis inside expert buffers: the batch axes minus the expert axis
# (rule in configs/common.py: ("expert_group", ("data", "fsdp")); without a rule it is replicated).
EXPERT_GROUP = axes.EXPERT_GROUP


class Backend:
    """A way to run the experts. `slots`: reads the (G, S, E, C) dispatch/combine tensors (token
    choice is fitted into capacity slots first); else reads the (index, weight) assignment.
    `expert_parallel`: splits the experts over the expert mesh axis, which must divide them."""

    slots = True
    expert_parallel = False

    @staticmethod
    def fallback(num_groups: int, mesh: experts.ExpertMesh) -> str | None:
        """The backend to run instead on this mesh / platform (same numbers), or None."""
        return None

    @staticmethod
    def run(routing, x, w, spec: experts.ExpertSpec):
        raise NotImplementedError


@BACKENDS.register("dense")
class Dense(Backend):
    """Reference: all experts on all tokens, y = sum_e gate_e * FFN_e(x)."""

    @staticmethod
    def run(routing, x, w, spec):
        out = experts.ffn(w, jnp.broadcast_to(x, (w["wi"].shape[0],) + x.shape), spec)  # E,G,S,d
        return jnp.einsum("gse,egsd->gsd", routing.gates().astype(spec.dtype), out)


@BACKENDS.register("capacity")
class Capacity(Backend):
    """One-hot einsum into (G, E, C, d) buffers; two constraints move their sharding from the batch
    axes (G over data, fsdp, expert) to the expert layout (G over data, fsdp; E over expert), which
    XLA lowers to an all-to-all, and back after the experts."""

    @staticmethod
    def run(routing, x, w, spec):
        dt = spec.dtype
        buf = jnp.einsum("gsec,gsd->gecd", routing.dispatch.astype(dt), x.astype(dt))
        buf = axes.constrain(buf, axes.BATCH, None, None, None)
        buf = axes.constrain(buf, EXPERT_GROUP, axes.EXPERT, None, None)
        out = experts.ffn(w, buf, spec, lhs="gecd")
        out = axes.constrain(out, EXPERT_GROUP, axes.EXPERT, None, None)
        out = axes.constrain(out, axes.BATCH, None, None, None)
        return jnp.einsum("gsec,gecd->gsd", routing.combine.astype(dt), out)


@BACKENDS.register("dropless")
class Dropless(Backend):
    """Sort assignments by expert, grouped matmuls, unsort, weight, sum."""

    slots = False

    @staticmethod
    def run(routing, x, w, spec):
        g, s, d = x.shape
        rows, order, sizes = experts.sort_by_expert(
            routing.index.reshape(g * s, -1), x.reshape(g * s, d), w["wi"].shape[0]
        )
        wd = jax.tree.map(lambda a: a.astype(spec.dtype), w)
        out = grouped.grouped_ffn(
            rows.astype(spec.dtype),
            wd,
            sizes,
            lambda h, gg: experts.activation(h, gg, spec.activation),
            spec.grouped_matmul,
        )
        weight = routing.weight.reshape(g * s, -1)
        return experts.unsort_and_combine(out, order, weight).reshape(g, s, d)


@BACKENDS.register("ep")
class ExpertParallel(Backend):
    """Explicit EP with `jax.shard_map` and padded `jax.lax.all_to_all` over the expert axis.

    Uses the ambient mesh (`jax.set_mesh`). Groups are split over the batch axes present in the
    mesh, experts over the expert axis. Without an expert axis, or with a batch that does not
    split over the devices (init with one row), the `capacity` backend gives the same numbers.
    """

    expert_parallel = True

    @staticmethod
    def fallback(num_groups, mesh):
        if mesh.ep == 1 or num_groups % mesh.devices:
            return "capacity"
        return None

    @staticmethod
    def run(routing, x, w, spec):
        mesh = experts.ExpertMesh.current(spec)
        bspec = jax.sharding.PartitionSpec(mesh.batch_axes)
        wspec = jax.sharding.PartitionSpec(spec.expert_axis)
        dt, ax = spec.dtype, spec.expert_axis

        def local(dispatch, combine, xl, wl):
            buf = jnp.einsum("gsec,gsd->egcd", dispatch.astype(dt), xl.astype(dt))  # E, Gl, C, d
            buf = jax.lax.all_to_all(buf, ax, split_axis=0, concat_axis=1, tiled=True)
            out = experts.ffn(wl, buf, spec)  # E/ep, Gl*ep, C, d
            out = jax.lax.all_to_all(out, ax, split_axis=1, concat_axis=0, tiled=True)
            return jnp.einsum("gsec,egcd->gsd", combine.astype(dt), out)

        fn = jax.shard_map(
            local, in_specs=(bspec, bspec, bspec, jax.tree.map(lambda _: wspec, w)), out_specs=bspec
        )
        return fn(routing.dispatch, routing.combine, x, w)


def choose(
    name: str, num_groups: int, num_experts: int, spec: experts.ExpertSpec, key: str = "model.moe"
) -> tuple:
    """-> (backend class that runs, no_drop). Follows `fallback`s from the named backend; `no_drop`
    is True when a dropless backend fell back to a slotted one, which must then keep every token
    (capacity = group size). Refuses experts that do not split over an expert axis > 1."""
    cls = BACKENDS.get(name, key=f"{key}.backend")
    mesh = experts.ExpertMesh.current(spec)
    if cls.expert_parallel:
        experts.check_expert_axis(num_experts, mesh.ep, spec.expert_axis, f"{key}.num_experts")
    no_drop = False
    for _ in range(len(BACKENDS.names()) + 1):
        nxt = cls.fallback(num_groups, mesh)
        if nxt is None:
            return cls, no_drop
        nxt_cls = BACKENDS.get(nxt)
        no_drop = no_drop or (not cls.slots and nxt_cls.slots)
        cls = nxt_cls
    raise RuntimeError(f"backend fallbacks from {name!r} form a cycle")

"""Dropless expert parallelism with `jax.lax.ragged_all_to_all` (accelerators only).

The MaxText "sparse" EP recipe: inside `jax.shard_map`, each device sorts its token->expert
assignments by expert, exchanges exactly the rows each expert shard needs with
`ragged_all_to_all`, groups the received rows by local expert, runs `jax.lax.ragged_dot`, and sends
the results back with the reverse exchange. Nothing is dropped and nothing is padded on the wire.

XLA:CPU does not implement ragged-all-to-all (jax-ml/jax#34755), so on CPU `backend="ep_ragged"`
falls back to the padded `ep` backend with a capacity that drops nothing (the same numbers);
without an expert mesh axis it is the `dropless` backend. `exchange_plan` (all the offsets and
sizes) is pure and tested on CPU against a numpy simulation of the collective.
"""

import jax
import jax.numpy as jnp

from netlab.moe import experts, grouped
from netlab.moe.dispatch import Backend
from netlab.moe.registries import BACKENDS


def exchange_plan(all_sizes, me, experts_per_device: int):
    """Offsets/sizes for device `me` given every device's per-expert row counts all_sizes (ep, E).

    Forward (tokens -> expert shards), in ragged_all_to_all's convention (per peer j):
      send_sizes[j]   rows I send to j (my rows for j's experts; my rows are sorted by expert),
      input_offsets[j] where they start in my sorted rows,
      output_offsets[j] where they land in j's receive buffer (after the rows of devices < me),
      recv_sizes[j]   rows I receive from j.
    The reverse exchange swaps the roles (send what I received, back to where it came from).
    """
    ep, num_experts = all_sizes.shape
    per_dev = all_sizes.reshape(ep, ep, experts_per_device).sum(-1)  # [src, dst] rows
    excl = lambda v, axis: jnp.cumsum(v, axis=axis) - v
    send = per_dev[me]
    recv = per_dev[:, me]
    fwd = dict(
        input_offsets=excl(send, 0),
        send_sizes=send,
        output_offsets=excl(per_dev, 0)[me],
        recv_sizes=recv,
    )
    rev = dict(
        input_offsets=excl(recv, 0),
        send_sizes=recv,
        output_offsets=excl(per_dev, 1)[:, me],
        recv_sizes=send,
    )
    return jax.tree.map(lambda a: a.astype(jnp.int32), fwd), jax.tree.map(
        lambda a: a.astype(jnp.int32), rev
    )


def received_expert_ids(all_sizes, me, experts_per_device: int, capacity: int):
    """Local expert id of each row of my receive buffer (rows from source 0, then 1, ...; inside a
    source sorted by expert); padding rows get `experts_per_device`."""
    ep = all_sizes.shape[0]
    mine = all_sizes[:, me * experts_per_device : (me + 1) * experts_per_device].reshape(
        -1
    )  # (ep*El,)
    labels = jnp.tile(jnp.arange(experts_per_device), ep)
    ends = jnp.cumsum(mine)
    rows = jnp.arange(capacity)
    seg = jnp.searchsorted(ends, rows, side="right")
    return jnp.where(seg < mine.size, labels[jnp.minimum(seg, mine.size - 1)], experts_per_device)


@BACKENDS.register("ep_ragged")
class RaggedExpertParallel(Backend):
    """Dropless EP: sort by expert, `ragged_all_to_all` to the expert shards, `ragged_dot`, back."""

    slots = False
    expert_parallel = True

    @staticmethod
    def fallback(num_groups, mesh):
        if jax.default_backend() == "cpu":
            return "ep"
        if mesh.ep == 1 or num_groups % mesh.devices:
            return "dropless"
        return None

    @staticmethod
    def run(routing, x, w, spec):
        mesh = experts.ExpertMesh.current(spec)
        num_experts = w["wi"].shape[0]
        ep, ax, dt = mesh.ep, spec.expert_axis, spec.dtype
        el = num_experts // ep
        P = jax.sharding.PartitionSpec

        def act(h, g):
            return experts.activation(h, g, spec.activation)

        def local(xl, index, weight, wl):
            g, s, d = xl.shape
            rows = index.size
            xs, order, sizes = experts.sort_by_expert(
                index.reshape(g * s, -1), xl.reshape(g * s, d), num_experts
            )
            all_sizes = jax.lax.all_gather(sizes, ax)  # (ep, E)
            me = jax.lax.axis_index(ax)
            fwd, rev = exchange_plan(all_sizes, me, el)
            cap = rows * ep  # worst case: all rows to me
            recv = jax.lax.ragged_all_to_all(
                xs.astype(dt),
                jnp.zeros((cap, d), dt),
                fwd["input_offsets"],
                fwd["send_sizes"],
                fwd["output_offsets"],
                fwd["recv_sizes"],
                axis_name=ax,
            )
            # regroup the received rows by local expert (padding rows, label el, go last)
            labels = received_expert_ids(all_sizes, me, el, cap)
            rows_e, regroup, gsizes = experts.sort_by_expert(labels[:, None], recv, el + 1)
            wd = jax.tree.map(lambda a: a.astype(dt), wl)
            out = grouped.grouped_ffn(rows_e, wd, gsizes[:el], act, "ragged_dot")
            out = experts.unsort(out, regroup)
            back = jax.lax.ragged_all_to_all(
                out,
                jnp.zeros((rows, d), dt),
                rev["input_offsets"],
                rev["send_sizes"],
                rev["output_offsets"],
                rev["recv_sizes"],
                axis_name=ax,
            )
            return experts.unsort_and_combine(back, order, weight.reshape(g * s, -1)).reshape(
                g, s, d
            )

        bspec = P(mesh.batch_axes)
        fn = jax.shard_map(
            local,
            in_specs=(bspec, bspec, bspec, jax.tree.map(lambda _: P(ax), w)),
            out_specs=bspec,
            check_vma=False,
        )
        return fn(x, routing.index, routing.weight, w)

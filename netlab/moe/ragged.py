"""Dropless expert parallelism with `jax.lax.ragged_all_to_all` (accelerators only).

The MaxText "sparse" EP recipe: inside `jax.shard_map`, each device sorts its token->expert
assignments by expert, exchanges exactly the rows each expert shard needs with
`ragged_all_to_all`, groups the received rows by local expert, runs `jax.lax.ragged_dot`, and sends
the results back with the reverse exchange. Nothing is dropped and nothing is padded on the wire.

XLA:CPU does not implement ragged-all-to-all (jax-ml/jax#34755), so `backend="ep_ragged"` raises a
one-line error on CPU; the padded `ep` backend is the everywhere path. `exchange_plan` (all the
offsets and sizes) is pure and tested on CPU against a numpy simulation of the collective.
"""
import jax
import jax.numpy as jnp

from netlab.moe.dispatch import _act, check_expert_axis


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
    per_dev = all_sizes.reshape(ep, ep, experts_per_device).sum(-1)       # [src, dst] rows
    excl = lambda v, axis: jnp.cumsum(v, axis=axis) - v
    send = per_dev[me]
    recv = per_dev[:, me]
    fwd = dict(input_offsets=excl(send, 0), send_sizes=send,
               output_offsets=excl(per_dev, 0)[me], recv_sizes=recv)
    rev = dict(input_offsets=excl(recv, 0), send_sizes=recv,
               output_offsets=excl(per_dev, 1)[:, me], recv_sizes=send)
    return jax.tree.map(lambda a: a.astype(jnp.int32), fwd), jax.tree.map(lambda a: a.astype(jnp.int32), rev)


def received_expert_ids(all_sizes, me, experts_per_device: int, capacity: int):
    """Local expert id of each row of my receive buffer (rows from source 0, then 1, ...; inside a
    source sorted by expert); padding rows get `experts_per_device`."""
    ep = all_sizes.shape[0]
    mine = all_sizes[:, me * experts_per_device:(me + 1) * experts_per_device].reshape(-1)   # (ep*El,)
    labels = jnp.tile(jnp.arange(experts_per_device), ep)
    ends = jnp.cumsum(mine)
    rows = jnp.arange(capacity)
    seg = jnp.searchsorted(ends, rows, side="right")
    return jnp.where(seg < mine.size, labels[jnp.minimum(seg, mine.size - 1)], experts_per_device)


def expert_parallel_ragged(routing, x, w, activation="gelu", dtype=jnp.float32, expert_axis="expert",
                           batch_axes=("data", "fsdp", "expert")):
    if jax.devices()[0].platform == "cpu":
        raise ValueError("backend='ep_ragged' needs ragged_all_to_all, which XLA:CPU does not implement; "
                         "use backend='ep' (padded all_to_all) on CPU")
    if routing.index is None:
        raise ValueError("backend='ep_ragged' needs a token-choice router (topk/sparsemixer)")
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or expert_axis not in mesh.axis_names or mesh.shape[expert_axis] == 1:
        from netlab.moe.dispatch import dropless
        return dropless(routing, x, w, activation, dtype)
    ep = mesh.shape[expert_axis]
    num_experts = w["wi"].shape[0]
    check_expert_axis(num_experts, ep, expert_axis)
    el = num_experts // ep
    bax = tuple(a for a in batch_axes if a in mesh.axis_names and mesh.shape[a] > 1)
    bax = bax if expert_axis in bax else bax + (expert_axis,)
    P = jax.sharding.PartitionSpec

    def local(xl, index, weight, wl):
        g, s, d = xl.shape
        k = index.shape[-1]
        rows = g * s * k
        flat = index.reshape(-1)
        order = jnp.argsort(flat, stable=True)
        xs = xl.reshape(g * s, d)[order // k].astype(dtype)
        sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
        all_sizes = jax.lax.all_gather(sizes, expert_axis)                      # (ep, E)
        me = jax.lax.axis_index(expert_axis)
        fwd, rev = exchange_plan(all_sizes, me, el)
        cap = rows * ep                                                          # worst case: all rows to me
        recv = jax.lax.ragged_all_to_all(xs, jnp.zeros((cap, d), dtype), fwd["input_offsets"], fwd["send_sizes"],
                                         fwd["output_offsets"], fwd["recv_sizes"], axis_name=expert_axis)
        labels = received_expert_ids(all_sizes, me, el, cap)
        regroup = jnp.argsort(labels, stable=True)
        grouped = recv[regroup]
        gsizes = jnp.bincount(labels, length=el + 1)[:el].astype(jnp.int32)
        h = jax.lax.ragged_dot(grouped, wl["wi"].astype(dtype), gsizes)
        gg = jax.lax.ragged_dot(grouped, wl["wg"].astype(dtype), gsizes) if "wg" in wl else None
        out = jax.lax.ragged_dot(_act(h, gg, activation), wl["wo"].astype(dtype), gsizes)
        out = jnp.zeros_like(out).at[regroup].set(out)
        back = jax.lax.ragged_all_to_all(out, jnp.zeros((rows, d), dtype), rev["input_offsets"], rev["send_sizes"],
                                         rev["output_offsets"], rev["recv_sizes"], axis_name=expert_axis)
        back = jnp.zeros_like(back).at[order].set(back).reshape(g, s, k, d)
        return jnp.einsum("gsk,gskd->gsd", weight.astype(dtype), back)

    fn = jax.shard_map(local, in_specs=(P(bax), P(bax), P(bax), jax.tree.map(lambda _: P(expert_axis), w)),
                       out_specs=P(bax), check_vma=False)
    return fn(x, routing.index, routing.weight, w)

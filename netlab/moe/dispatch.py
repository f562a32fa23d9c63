"""Dispatch backends: how tokens reach the stacked experts and come back.

Expert weights are stacked: `wi` (E, d, f), optional `wg` (E, d, f) for a gated (SwiGLU) expert, and
`wo` (E, f, d), with logical axes (expert, embed_no_exp, mlp). Every backend computes

    y_s = Σ_e Σ_c combine[s, e, c] · FFN_e(Σ_s' dispatch[s', e, c] · x_s')

for the same `Routing`; they differ only in how (and how much) they compute and communicate:

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
  capacity (capacity_factor=None: worst case, nothing drops), so it runs everywhere, XLA:CPU
  included; `ragged_all_to_all` is not used (UNIMPLEMENTED on XLA:CPU).
"""
import math

import jax
import jax.numpy as jnp

from netlab.moe import grouped
from netlab.sharding import axes

BACKENDS = ("dense", "capacity", "dropless", "ep", "ep_ragged")

# Logical name of the group axis inside expert buffers: the batch axes minus the expert axis
# (rule in configs/common.py: ("expert_group", ("data", "fsdp")); without a rule it is replicated).
EXPERT_GROUP = axes.EXPERT_GROUP


def _act(h, g, activation):
    if activation == "gelu":
        a = jax.nn.gelu(h)
    elif activation == "relu":
        a = jax.nn.relu(h)
    elif activation == "silu":
        a = jax.nn.silu(h)
    else:
        raise ValueError(f"unknown expert activation {activation!r}; use gelu, relu or silu")
    return a if g is None else a * g


def expert_ffn(w, buf, activation="gelu", dtype=jnp.float32):
    """FFN_e applied to buffers (E, ..., d) with stacked weights w = {wi, wo[, wg]}."""
    buf = buf.astype(dtype)
    h = jnp.einsum("e...d,edf->e...f", buf, w["wi"].astype(dtype))
    g = jnp.einsum("e...d,edf->e...f", buf, w["wg"].astype(dtype)) if "wg" in w else None
    a = _act(h, g, activation)
    return jnp.einsum("e...f,efd->e...d", a, w["wo"].astype(dtype))


def dense(routing, x, w, activation="gelu", dtype=jnp.float32):
    """Reference: all experts on all tokens, y = Σ_e gate_e · FFN_e(x)."""
    out = expert_ffn(w, jnp.broadcast_to(x, (w["wi"].shape[0],) + x.shape), activation, dtype)   # (E, G, S, d)
    return jnp.einsum("gse,egsd->gsd", routing.gates().astype(dtype), out)


def capacity(routing, x, w, activation="gelu", dtype=jnp.float32):
    """One-hot einsum into (G, E, C, d) buffers; two constraints move their sharding from the batch
    axes (G over data, fsdp, expert) to the expert layout (G over data, fsdp; E over expert), which
    XLA lowers to an all-to-all, and back after the experts."""
    buf = jnp.einsum("gsec,gsd->gecd", routing.dispatch.astype(dtype), x.astype(dtype))
    buf = axes.constrain(buf, axes.BATCH, None, None, None)
    buf = axes.constrain(buf, EXPERT_GROUP, axes.EXPERT, None, None)
    out = _expert_ffn_ge(w, buf, activation, dtype)
    out = axes.constrain(out, EXPERT_GROUP, axes.EXPERT, None, None)
    out = axes.constrain(out, axes.BATCH, None, None, None)
    return jnp.einsum("gsec,gecd->gsd", routing.combine.astype(dtype), out)


def _expert_ffn_ge(w, buf, activation, dtype):
    """FFN_e on (G, E, C, d) buffers."""
    h = jnp.einsum("gecd,edf->gecf", buf, w["wi"].astype(dtype))
    g = jnp.einsum("gecd,edf->gecf", buf, w["wg"].astype(dtype)) if "wg" in w else None
    return jnp.einsum("gecf,efd->gecd", _act(h, g, activation), w["wo"].astype(dtype))


def dropless(routing, x, w, activation="gelu", dtype=jnp.float32, grouped_matmul="auto"):
    """Sort assignments by expert, grouped matmuls (`netlab.moe.grouped`: `ragged_dot` on
    accelerators, MegaBlocks-style padded blocks on CPU), unsort, weight, sum."""
    if routing.index is None:
        raise ValueError("the dropless backend needs a token-choice router (topk/sparsemixer); "
                         "use backend='capacity' for expert choice or Soft MoE")
    g, s, d = x.shape
    k = routing.index.shape[-1]
    num_experts = w["wi"].shape[0]
    flat = routing.index.reshape(-1)                                 # (T*k,)
    order = jnp.argsort(flat, stable=True)
    xs = x.reshape(g * s, d)[order // k].astype(dtype)
    sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
    wd = jax.tree.map(lambda a: a.astype(dtype), w)
    out = grouped.grouped_ffn(xs, wd, sizes, lambda h, gg: _act(h, gg, activation), grouped_matmul)
    out = jnp.zeros_like(out).at[order].set(out, unique_indices=True).reshape(g, s, k, d)
    return jnp.einsum("gsk,gskd->gsd", routing.weight.astype(dtype), out)


def _mesh_axes_present(mesh, names):
    return tuple(n for n in names if n in mesh.axis_names and mesh.shape[n] > 1)


def expert_parallel(routing, x, w, activation="gelu", dtype=jnp.float32, expert_axis="expert",
                    batch_axes=("data", "fsdp", "expert")):
    """Explicit EP with `jax.shard_map` and padded `jax.lax.all_to_all` over `expert_axis`.

    Uses the ambient mesh (`jax.set_mesh`). Groups are split over `batch_axes` (those present in the
    mesh), experts over `expert_axis`. Without a mesh, or with an expert axis of size 1, it is the
    `capacity` backend (same numbers), so the model runs in a notebook.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or expert_axis not in mesh.axis_names or mesh.shape[expert_axis] == 1:
        return capacity(routing, x, w, activation, dtype)
    num_experts = w["wi"].shape[0]
    ep = mesh.shape[expert_axis]
    check_expert_axis(num_experts, ep, expert_axis)
    bax = _mesh_axes_present(mesh, batch_axes)
    if expert_axis not in bax:
        bax = bax + (expert_axis,)
    ndev = math.prod(mesh.shape[a] for a in bax)
    if x.shape[0] % ndev:
        # e.g. init with a batch of 1: same numbers through the GSPMD path (the trainer checks batches).
        return capacity(routing, x, w, activation, dtype)
    bspec = jax.sharding.PartitionSpec(bax)
    wspec = jax.sharding.PartitionSpec(expert_axis)

    def local(dispatch, combine, xl, wl):
        buf = jnp.einsum("gsec,gsd->egcd", dispatch.astype(dtype), xl.astype(dtype))       # (E, Gl, C, d)
        buf = jax.lax.all_to_all(buf, expert_axis, split_axis=0, concat_axis=1, tiled=True)  # (E/ep, Gl*ep, C, d)
        out = expert_ffn(wl, buf, activation, dtype)
        out = jax.lax.all_to_all(out, expert_axis, split_axis=1, concat_axis=0, tiled=True)  # (E, Gl, C, d)
        return jnp.einsum("gsec,egcd->gsd", combine.astype(dtype), out)

    fn = jax.shard_map(local, in_specs=(bspec, bspec, bspec, jax.tree.map(lambda _: wspec, w)),
                       out_specs=bspec)
    return fn(routing.dispatch, routing.combine, x, w)


def check_expert_axis(num_experts: int, ep: int, expert_axis="expert"):
    if num_experts % ep:
        raise ValueError(f"num_experts={num_experts} is not divisible by the '{expert_axis}' mesh axis ({ep}); "
                         f"use a multiple of {ep} experts or set mesh.{expert_axis} to a divisor of {num_experts}")


def run(backend: str, routing, x, w, activation="gelu", dtype=jnp.float32, grouped_matmul="auto", **ep_kwargs):
    if backend == "dense":
        return dense(routing, x, w, activation, dtype)
    if backend == "capacity":
        return capacity(routing, x, w, activation, dtype)
    if backend == "dropless":
        return dropless(routing, x, w, activation, dtype, grouped_matmul)
    if backend == "ep":
        return expert_parallel(routing, x, w, activation, dtype, **ep_kwargs)
    if backend == "ep_ragged":
        from netlab.moe.ragged import expert_parallel_ragged
        return expert_parallel_ragged(routing, x, w, activation, dtype, **ep_kwargs)
    raise ValueError(f"unknown MoE backend {backend!r}; choose one of {', '.join(BACKENDS)}")

"""The stacked experts every dispatch backend runs: weights, activation, FFN, sort-by-expert, mesh.

Expert weights are stacked on a leading expert axis: `wi` (E, d, f), optional `wg` (E, d, f) for a
gated expert (GLU; SwiGLU with activation="silu", Shazeer 2020), and `wo` (E, f, d), with logical
axes (expert, embed_no_exp, mlp) so that the sharding rules put E on the `expert` mesh axis.
FFN_e(x) = act(x W_i[e]) [* x W_g[e]] W_o[e].

The backends (`dispatch.py`, `ragged.py`) import this module and nothing of each other.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.sharding import axes

ACTIVATIONS = {"gelu": jax.nn.gelu, "relu": jax.nn.relu, "silu": jax.nn.silu}


@dataclasses.dataclass(frozen=True)
class ExpertSpec:
    """How the experts compute and where they live (static: fixed for one layer)."""

    activation: str = "gelu"
    dtype: Any = jnp.float32
    grouped_matmul: str = "auto"  # dropless: auto | ragged_dot | tiled (netlab.moe.grouped)
    expert_axis: str = "expert"  # mesh axis the experts are split over (ep backends)
    batch_axes: tuple = ("data", "fsdp", "expert")  # mesh axes the token groups are split over


def activation(h, g, name: str):
    """act(h), times the gate g when the expert is gated (g is None otherwise)."""
    a = ACTIVATIONS[name](h)
    return a if g is None else a * g


def stacked_weights(module: nn.Module, num_experts: int, d: int, hidden: int, glu: bool) -> dict:
    """Create {wi, wo[, wg]} inside `module` (fan-in scaled truncated normals per expert)."""
    e, f = num_experts, hidden
    init = nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
    )
    w = {
        "wi": module.param(
            "wi", axes.param(init, axes.EXPERT, axes.EXPERT_EMBED, axes.MLP), (e, d, f)
        ),
        "wo": module.param(
            "wo", axes.param(init, axes.EXPERT, axes.MLP, axes.EXPERT_EMBED), (e, f, d)
        ),
    }
    if glu:
        w["wg"] = module.param(
            "wg", axes.param(init, axes.EXPERT, axes.EXPERT_EMBED, axes.MLP), (e, d, f)
        )
    return w


def ffn(w, buf, spec: ExpertSpec, lhs: str = "e...d"):
    """FFN_e on buffers whose axes are `lhs` (expert axis `e`, embed last): "e...d" for (E, ..., d),
    "gecd" for (G, E, C, d)."""
    rhs_h, rhs_o = lhs[:-1] + "f", lhs
    dt = spec.dtype
    buf = buf.astype(dt)
    h = jnp.einsum(f"{lhs},edf->{rhs_h}", buf, w["wi"].astype(dt))
    g = jnp.einsum(f"{lhs},edf->{rhs_h}", buf, w["wg"].astype(dt)) if "wg" in w else None
    return jnp.einsum(
        f"{rhs_h},efd->{rhs_o}", activation(h, g, spec.activation), w["wo"].astype(dt)
    )


# --------------------------------------------------------------------------------------------------
# Sort by expert (dropless backends)


def sort_by_expert(index, x, num_experts: int):
    """Rows of the token->expert assignments, sorted by expert (stable: token order inside one).

    index (T, k) int, x (T, d) -> rows (T*k, d), order (T*k,) (row r is assignment order[r] of the
    flattened index), sizes (E,) int32 rows per expert.
    """
    k = index.shape[-1]
    flat = index.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
    return x[order // k], order, sizes


def unsort(rows, order):
    """Inverse of `sort_by_expert`'s permutation: rows (T*k, d) sorted by expert -> the
    assignments' order."""
    return jnp.zeros_like(rows).at[order].set(rows, unique_indices=True)


def unsort_and_combine(rows, order, weight):
    """`unsort`, then y_t = sum_j weight[t, j] * out[t, j]: rows (T*k, d) sorted by expert,
    weight (T, k) -> (T, d)."""
    t, k = weight.shape
    out = unsort(rows, order).reshape(t, k, -1)
    return jnp.einsum("tk,tkd->td", weight.astype(rows.dtype), out)


# --------------------------------------------------------------------------------------------------
# Mesh


@dataclasses.dataclass(frozen=True)
class ExpertMesh:
    """The ambient mesh (`jax.set_mesh`) as the expert-parallel backends see it."""

    ep: int  # size of the expert axis (1 when the mesh has none)
    batch_axes: tuple  # mesh axes (of size > 1) the groups are split over, expert axis last
    devices: int  # product of their sizes

    @classmethod
    def current(cls, spec: ExpertSpec) -> "ExpertMesh":
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty or spec.expert_axis not in mesh.axis_names:
            return cls(1, (), 1)
        present = tuple(a for a in spec.batch_axes if a in mesh.axis_names and mesh.shape[a] > 1)
        if spec.expert_axis not in present:
            present = present + (spec.expert_axis,)
        return cls(mesh.shape[spec.expert_axis], present, math.prod(mesh.shape[a] for a in present))


def check_expert_axis(
    num_experts: int, ep: int, expert_axis: str = "expert", key: str = "model.moe.num_experts"
):
    """Expert parallelism puts E/ep whole experts on each device of the expert axis."""
    if ep > 1 and num_experts % ep:
        raise UserError(
            f"{key}={num_experts} is not divisible by the '{expert_axis}' mesh axis "
            f"({ep}); use a multiple of {ep} experts or set mesh.{expert_axis} to a "
            f"divisor of {num_experts}"
        )

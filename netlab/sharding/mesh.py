"""Device mesh from `config.mesh`, logical->mesh rules from `config.sharding`, and state shardings.

Axes are always (island, stage, data, fsdp, expert, tensor), island and stage defaulting to 1; one
size may be -1 to take the remaining devices.
Meshes use AxisType.Auto so that linen's logical constraints work (Explicit axes reject them).
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.errors import UserError
from netlab.sharding.axes import MESH_AXES


def mesh_shape(mesh_cfg, num_devices: int) -> tuple:
    sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
    if any(s == 0 or s < -1 for s in sizes):
        raise UserError(
            f"config.mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}"
        )
    if sizes.count(-1) > 1:
        raise UserError("config.mesh: at most one axis may be -1 (fill the remaining devices)")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise UserError(
                f"config.mesh {dict(zip(MESH_AXES, sizes))}: fixed sizes {known} do not divide "
                f"the {num_devices} devices; set sizes whose product divides {num_devices}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        hint = ""
        if num_devices < math.prod(sizes) and jax.default_backend() == "cpu":
            hint = (
                f" (on a CPU, simulate them: XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{math.prod(sizes)} before starting Python)"
            )
        raise UserError(
            f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
            f"{num_devices} are available; make the product {num_devices} or use -1 on one axis{hint}"  # noqa: E501
        )
    return tuple(sizes)


def multislice_devices(shape, devices):
    """Devices of several TPU slices (multislice, joined by DCN) as an array of `shape` whose
    island axis (the first) spans the slices and whose other axes stay inside a slice (ICI), so
    islands are slices: `mesh_utils.create_hybrid_device_mesh`. None for one slice, or when the
    island size is not a multiple of the number of slices (then the default layout is used)."""
    slices = {getattr(d, "slice_index", None) for d in devices}
    if len(slices) < 2 or None in slices or shape[0] % len(slices):
        return None
    from jax.experimental import mesh_utils

    n = len(slices)
    ici, dcn = (shape[0] // n, *shape[1:]), (n,) + (1,) * (len(shape) - 1)
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    hybrid = multislice_devices(shape, devices)
    if hybrid is not None:
        return Mesh(hybrid, MESH_AXES, axis_types=(AxisType.Auto,) * len(shape))
    if len(devices) == jax.device_count():
        return jax.make_mesh(
            shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(shape), devices=devices
        )
    return Mesh(
        np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(shape)
    )


def rules(sharding_cfg) -> tuple:
    """Rules as flax wants them: ((logical, mesh axis | tuple | None), ...)."""
    out = []
    for name, target in sharding_cfg.rules:
        out.append((name, tuple(target) if isinstance(target, (list, tuple)) else target))
    return tuple(out)


def _fsdp_fallback(spec: P, shape, dtype, mesh: Mesh, min_bytes: int) -> P:
    """Unannotated large leaves: shard the largest dimension divisible by the fsdp axis size."""
    fsdp = mesh.shape["fsdp"]
    if fsdp == 1 or any(s is not None for s in spec) or not shape:
        return spec
    if math.prod(shape) * np.dtype(dtype).itemsize < min_bytes:
        return spec
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
    return spec


def _divisible(spec: P, shape, mesh: Mesh) -> P:
    """Drop mesh axes from dimensions they do not divide (tiny layers on big meshes stay replicated)."""  # noqa: E501
    fixed = []
    for d, entry in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        names = tuple(n for n in names if mesh.shape[n] > 1)
        size = math.prod(mesh.shape[n] for n in names)
        fixed.append(
            None if not names or shape[d] % size else (names[0] if len(names) == 1 else names)
        )
    return P(*fixed)


def strip_boxes(tree):
    """Remove logical-partitioning boxes without applying sharding constraints (abstract trees)."""
    is_box = lambda x: isinstance(x, nn.Partitioned)
    return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)


def state_shardings(abstract_boxed, mesh: Mesh, rule_set, fsdp_min_bytes: int):
    """NamedShardings for every leaf of an abstract (boxed, logically named) state pytree."""
    logical = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(logical, rule_set)
    abstract = strip_boxes(abstract_boxed)
    is_spec = lambda x: isinstance(x, P)

    def one(spec, leaf):
        spec = _divisible(spec, leaf.shape, mesh)
        return NamedSharding(
            mesh, _fsdp_fallback(spec, leaf.shape, leaf.dtype, mesh, fsdp_min_bytes)
        )

    return jax.tree.map(one, mesh_specs, abstract, is_leaf=is_spec)


def logical_sharding(mesh: Mesh, rule_set, logical_axes) -> NamedSharding:
    """NamedSharding for one array described by logical axis names (a batch leaf)."""
    spec = nn.logical_to_mesh_axes(tuple(logical_axes or ()), rule_set)
    return NamedSharding(mesh, spec)


def data_parallel_size(mesh: Mesh, rule_set) -> int:
    """How many ways a leaf with a leading `batch` axis is split."""
    spec = nn.logical_to_mesh_axes(("batch",), rule_set)
    entry = spec[0]
    names = (entry,) if isinstance(entry, str) else tuple(entry or ())
    return math.prod(mesh.shape[n] for n in names)

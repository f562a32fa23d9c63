"""Compile a config's train step ahead of time and print what each device would need.

    python -m netlab.tools.aot --config configs/moe/lm_tiny.py:pod --devices 256
    python -m netlab.tools.aot --config configs/classify_digits.py:pod --topology v5e:16x16

With --devices N the step is compiled for N fake CPU devices laid out by `config.mesh`: the
sharding, the collectives and the per-device memory of the parameters, optimizer state and batch
are those of the real run (XLA:CPU's temporaries differ from a TPU's or GPU's; treat them as an
estimate). With --topology the step is compiled by XLA:TPU for that TPU topology (real TPU
memory and FLOPs); it needs libtpu (`pip install 'jax[tpu]'`, or TPU_LIBRARY_PATH=.../libtpu.so)
but no TPU: a CPU machine with libtpu compiles for a v5e-256. Without libtpu the tool says so and
exits 1. Nothing is allocated or written.

With a pipeline (`mesh.stage` > 1, netlab/sharding/pipeline.py) it also prints each stage's
share: the state bytes on the devices of each stage (each holds depth / stage of the stacked
blocks) next to the per-device peak of the compiled step (one SPMD program: every device's).
"""

import argparse
import math
import os
import sys

from netlab.errors import UserError


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m netlab.tools.aot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="configs/<file>.py[:preset]")
    p.add_argument("--devices", type=int, default=0, help="compile for this many fake CPU devices")
    p.add_argument("--topology", default="", help="TPU topology, e.g. v5e:16x16 (needs libtpu)")
    from netlab import configlib

    args, rest = p.parse_known_args(argv)
    overrides = configlib.parse_overrides(rest)
    return args, overrides


def _gib(n):
    return f"{n / 2**30:.3f} GiB"


def measure(cfg, devices=None) -> dict:
    """Compile `cfg`'s train step for `devices` (default: all) without allocating anything and
    return what each device would need: state bytes (params + optimizer + EMA), XLA's memory
    analysis (arguments, outputs, temporaries; host temporaries when activations are offloaded),
    the peak estimate, FLOPs per step and the collectives in the program."""
    import jax
    import numpy as np

    from netlab.train.trainer import Trainer

    trainer = Trainer(cfg, devices=devices)
    local = trainer.task.train_batch(0)
    batch = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        local,
        trainer.batch_shardings,
    )
    with trainer.context():
        compiled = trainer._step.lower(trainer.abstract_state, batch).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    state_bytes = sum(
        math.prod(s.shard_shape(a.shape)) * np.dtype(a.dtype).itemsize
        for a, s in zip(
            jax.tree.leaves(trainer.abstract_state), jax.tree.leaves(trainer.state_shardings)
        )
    )
    hlo = compiled.as_text()
    stage_state = _stage_state_bytes(trainer) if trainer.mesh.shape.get("stage", 1) > 1 else None
    out = dict(
        mesh=dict(trainer.mesh.shape),
        devices=int(trainer.mesh.size),
        params=int(trainer.num_params()),
        state_bytes=int(state_bytes),
        flops=float(cost["flops"]) if cost and "flops" in cost else None,
        collectives=[
            op
            for op in (
                "all-reduce",
                "all-gather",
                "reduce-scatter",
                "all-to-all",
                "collective-permute",
            )
            if op in hlo
        ],
        peak_bytes=None,
        host_temp_bytes=0,
        stage_state_bytes=stage_state,
    )
    if mem is not None:
        out.update(
            argument_bytes=int(mem.argument_size_in_bytes),
            output_bytes=int(mem.output_size_in_bytes),
            temp_bytes=int(mem.temp_size_in_bytes),
            alias_bytes=int(mem.alias_size_in_bytes),
            generated_code_bytes=int(mem.generated_code_size_in_bytes),
            host_temp_bytes=int(getattr(mem, "host_temp_size_in_bytes", 0) or 0),
            peak_bytes=int(
                mem.argument_size_in_bytes
                + mem.temp_size_in_bytes
                + max(mem.output_size_in_bytes - mem.alias_size_in_bytes, 0)
            ),
        )
    return out


def _stage_state_bytes(trainer) -> list:
    """Per pipeline stage: the largest state (params + optimizer + EMA) bytes held by one of its
    devices, from the shardings (which slice of each leaf every device holds)."""
    import jax
    import numpy as np

    mesh = trainer.mesh
    stage_of = {}
    axis = mesh.axis_names.index("stage")
    for index, device in np.ndenumerate(mesh.devices):
        stage_of[device] = index[axis]
    per_device = dict.fromkeys(stage_of, 0)
    for a, s in zip(
        jax.tree.leaves(trainer.abstract_state), jax.tree.leaves(trainer.state_shardings)
    ):
        item = np.dtype(a.dtype).itemsize
        for device, idx in s.devices_indices_map(a.shape).items():
            shape = [len(range(*sl.indices(n))) for sl, n in zip(idx, a.shape)]
            per_device[device] += math.prod(shape) * item
    out = [0] * mesh.shape["stage"]
    for device, b in per_device.items():
        out[stage_of[device]] = max(out[stage_of[device]], int(b))
    return out


def tpu_topology(name):
    """Compile-only devices of TPU topology `name` ("v5e:16x16", "v4:2x2x2", "v5:4x4x8" for v5p),
    one slice. libtpu builds them without TPU hardware (a CPU machine with libtpu installed, or
    TPU_LIBRARY_PATH naming its libtpu.so, compiles for a pod). The platform is always "tpu"
    and the generation stays in the name: JAX has no "v5e" platform. v4 and v5p chips are
    "megacore" (two cores as one device); every host holds a 2x2 block of chips."""
    from jax.experimental import topologies

    megacore = name.split(":")[0] in ("v4", "v5", "v5p")
    return topologies.get_topology_desc(
        platform="tpu",
        topology_name=name,
        chip_config_name="megacore" if megacore else "default",
        chips_per_host_bounds=(2, 2, 1),
        num_slices=1,
    ).devices


def main(argv=None) -> int:
    try:
        args, overrides = _parse(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.devices:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.devices}"
        )
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from netlab import configlib
    from netlab.train import validate

    try:
        cfg = configlib.load(args.config, overrides=overrides)
        validate.config(cfg)
        devices = None
        if args.topology:
            try:
                devices = tpu_topology(args.topology)
            except Exception as e:  # noqa: BLE001 - any failure here means "cannot target this topology"
                print(
                    f"error: cannot compile for TPU topology {args.topology!r} on this machine "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); install libtpu with "
                    f"pip install 'jax[tpu]' (no TPU needed) or set TPU_LIBRARY_PATH to its "
                    f"libtpu.so, or estimate with --devices N",
                    file=sys.stderr,
                )
                return 1
        r = measure(cfg, devices)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"config      {args.config}  mesh {r['mesh']}  devices {r['devices']}")
    print(f"parameters  {r['params']:,}")
    print(f"per device  state (params + optimizer + EMA) {_gib(r['state_bytes'])}")
    if r["peak_bytes"] is not None:
        print(
            f"per device  arguments {_gib(r['argument_bytes'])}  "
            f"outputs {_gib(r['output_bytes'])}  temporaries {_gib(r['temp_bytes'])}  "
            f"generated code {_gib(r['generated_code_bytes'])}"
        )
        print(f"per device  peak estimate {_gib(r['peak_bytes'])}")
        if r["host_temp_bytes"]:
            print(f"per device  host temporaries (offloaded) {_gib(r['host_temp_bytes'])}")
    for i, b in enumerate(r.get("stage_state_bytes") or ()):
        peak = f"  peak estimate {_gib(r['peak_bytes'])}" if r["peak_bytes"] is not None else ""
        print(f"stage {i:<5} state {_gib(b)} per device{peak} (the compiled step's)")
    if r["flops"] is not None:
        print(f"flops/step  {r['flops']:.3e} per device (XLA cost analysis)")
    print(f"collectives {', '.join(r['collectives']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the bench scripts: the chips' peak table, MFU from XLA's cost analysis, the
compiled program's per-device memory, and median step timing.

MFU here is hardware MFU: the FLOPs XLA counts in the compiled step (rematerialised forward passes,
router and dispatch einsums included) divided by the step time and the chip's dense bf16 peak.
Custom calls (cuDNN fused attention, for one) are not counted by XLA's cost analysis, so a step
that uses them under-reports its FLOPs; `bench/accelerator.py` says which numbers that touches.
"""

import time

import numpy as np

# Dense bf16 peak TFLOP/s per chip, from the vendors' data sheets (no sparsity). The first entry
# whose key is in `device_kind` (case-insensitive) wins, so specific names come first.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L4", 121.0),
    ("v6 lite", 918.0),  # TPU v6e (Trillium)
    ("v6e", 918.0),
    ("v5 lite", 197.0),  # TPU v5e reports "TPU v5 lite"
    ("v5e", 197.0),
    ("v5p", 459.0),
    ("v5", 459.0),
    ("v4", 275.0),
)


def peak_tflops(device_kind: str):
    """The chip's dense bf16 peak in TFLOP/s, or None when the chip is not in the table (CPUs)."""
    kind = device_kind.lower()
    return next((v for k, v in PEAK_TFLOPS if k.lower() in kind), None)


def compiled_flops(compiled) -> float:
    """FLOPs per device of one call of a compiled program (XLA's cost analysis; 0 if absent)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def peak_bytes(compiled):
    """Per-device peak estimate of a compiled program: arguments + temporaries + outputs that do
    not alias an argument (None when the backend gives no memory analysis)."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    return int(
        mem.argument_size_in_bytes
        + mem.temp_size_in_bytes
        + max(mem.output_size_in_bytes - mem.alias_size_in_bytes, 0)
    )


def median_seconds(fn, steps: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `steps` calls after `warmup` calls; `fn` must block until
    its result is ready."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(steps, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def op_profile(fn, steps: int = 3, top: int = 15, logdir: str = "/tmp/netlab_op_profile"):
    """Where a compiled step spends its time: runs `fn()` `steps` times under `jax.profiler.trace`
    and sums the XLA:CPU thunk events (one per fusion / dot / scatter / custom call) by name.
    Returns [(name, total_ms_per_step, fraction_of_thunk_time)] for the `top` names, longest first.
    On CPU each thunk is a TraceMe on the executing thread, so nested or concurrent events (two
    Eigen threads) can make the fractions sum past 1 only if the runtime overlaps thunks."""
    import glob
    import shutil

    import jax
    from jax._src.lib import _profile_data

    shutil.rmtree(logdir, ignore_errors=True)
    fn()  # compile and warm up outside the trace
    with jax.profiler.trace(logdir):
        for _ in range(steps):
            fn()
    path = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
    totals = {}
    for plane in _profile_data.ProfileData.from_file(path).planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for ev in line.events:
                op = dict(ev.stats).get("hlo_op")
                if op is not None:
                    totals[op] = totals.get(op, 0) + ev.duration_ns
    total = sum(totals.values()) or 1
    rows = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [(name, ns / 1e6 / steps, ns / total) for name, ns in rows]

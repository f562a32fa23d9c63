"""Communication of a compiled program, read from its HLO: bytes per device in each collective.

`collective_bytes(hlo_text)` parses the text of a compiled (SPMD-partitioned, per-device) program,
`jax.jit(f).lower(...).compile().as_text()`, and sums for every all-reduce, all-gather,
reduce-scatter, all-to-all and collective-permute (and their async `-start` forms; `-done` is not
counted twice) the bytes of the buffer it exchanges on one device:

    all-reduce, reduce-scatter, all-to-all, collective-permute   its operands' bytes
    all-gather                                                   its result's bytes (the gathered)

Shapes and dtypes come from the HLO types (`f32[16,512]{1,0}`, tuples of them). Ops inside a
`while` body count times the loop's trip count when XLA knows it (`known_trip_count` in the
backend config), once otherwise (counted in `unknown_trip_counts`); of a `conditional`'s
branches the one that moves the most counts. So the numbers are what the compiler kept after
its own optimisations (fused or removed collectives), not what the jaxpr asked for, which is the
point: netlab/train/diloco.py's `collective_bytes` counts the jaxpr instead.

`trainer_comm(trainer)` compiles a Trainer's step program(s) for the batch of step 0 and reports
bytes per step; in islands mode (netlab/train/islands.py) the inner and the sync step separately
and their average over a round of H steps. From a shell (compiles only, allocates nothing):

    python -m netlab.tools.hlo_comm --config configs/classify_digits.py:islands --devices 8 \
        --config.mesh.island=8 --config.islands.sync_every=16
"""

import math
import re

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
    "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5,
}  # fmt: skip
_SHAPE = re.compile(r"\b([a-z]+[0-9a-z]*)\[([0-9,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([^\s(]+)")
_CALLS = re.compile(
    r"\b(?:calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.-]+)"
)
_BODY = re.compile(r"\bbody=%?([\w.-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIPS = re.compile(r'known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)')


def shape_bytes(text: str) -> int:
    """Bytes of every array type in `text` (an HLO type, possibly a tuple)."""
    total = 0.0
    for dtype, dims in _SHAPE.findall(text):
        size = 1 if dtype.startswith("f8") else _BYTES.get(dtype)
        if size is None:
            continue  # token[], opaque types
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return int(total)


def _closing(text: str, start: int) -> int:
    """Index just past the parenthesis group that opens at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def _parse(hlo_text: str) -> tuple:
    """({computation: [(name, type, opcode, operand names, attributes)]}, entry name)."""
    comps, entry, current = {}, None, None
    for line in hlo_text.splitlines():
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        if not line[0].isspace():
            if line.rstrip().endswith("{"):
                current = _HEADER.match(line).group(1)
                comps[current] = []
                entry = current if line.startswith("ENTRY") else entry
            continue
        if current is None or " = " not in line:
            continue
        lhs, rhs = line.strip().split(" = ", 1)
        rhs = re.sub(r"/\*.*?\*/", "", rhs)
        end = _closing(rhs, 0) if rhs.startswith("(") else rhs.find(" ")
        typ, rest = rhs[:end], rhs[end:].strip()
        paren = rest.find("(")
        opcode = rest[:paren]
        close = _closing(rest, paren)
        operands = re.findall(r"%([\w.-]+)", rest[paren:close])
        name = lhs.replace("ROOT ", "").lstrip("%")
        comps[current].append((name, typ, opcode, operands, rest[close:]))
    return comps, entry


def collective_bytes(hlo_text: str) -> dict:
    """{kind: bytes per device per run of the program} for the kinds present (underscored, e.g.
    "all_reduce"), plus "total" and "unknown_trip_counts"."""
    comps, entry = _parse(hlo_text)
    types = {c: {n: t for n, t, *_ in instrs} for c, instrs in comps.items()}
    unknown, memo = [0], {}

    def walk(comp) -> dict:
        if comp in memo:
            return memo[comp]
        memo[comp] = {}  # no recursion in HLO; guards against a malformed text
        out: dict = {}

        def add(counts, times=1):
            for k, v in counts.items():
                out[k] = out.get(k, 0) + times * v

        for _name, typ, opcode, operands, attrs in comps.get(comp, ()):
            kind = opcode[: -len("-start")] if opcode.endswith("-start") else opcode
            if kind in KINDS:
                operand_bytes = sum(shape_bytes(types[comp].get(o, "")) for o in operands)
                if kind == "all-gather":
                    size = shape_bytes(typ) - (operand_bytes if opcode.endswith("-start") else 0)
                else:
                    size = operand_bytes
                add({kind.replace("-", "_"): size})
            branches = _BRANCHES.search(attrs)
            if branches:
                options = [walk(b.strip().lstrip("%")) for b in branches.group(1).split(",")]
                add(max(options, key=lambda d: sum(d.values()), default={}))
            body = _BODY.search(attrs) if opcode == "while" else None
            for callee in _CALLS.findall(attrs):
                times = 1
                if body and callee == body.group(1):
                    trips = _TRIPS.search(attrs)
                    times = int(trips.group(1)) if trips else 1
                    unknown[0] += 0 if trips else 1
                add(walk(callee), times)
        memo[comp] = out
        return out

    out = dict(walk(entry)) if entry else {}
    out["total"] = sum(out.values())
    out["unknown_trip_counts"] = unknown[0]
    return out


def compiled_text(jitted, *args) -> str:
    """The compiled HLO text of `jitted` (a `jax.jit` function) for `args` (arrays or
    ShapeDtypeStructs with shardings)."""
    return jitted.lower(*args).compile().as_text()


def trainer_comm(trainer) -> dict:
    """Bytes per device of a Trainer's step programs, for the batch shapes of step 0:
    {"step": {...}} and, in islands mode, {"sync_step": {...}} and "per_step" (the mean over a
    round of H steps: H - 1 inner steps and one sync step); else "per_step" is the step's total."""
    import jax
    import numpy as np

    batch = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        trainer.task.train_batch(0),
        trainer.batch_shardings,
    )
    out = {}
    with trainer.context():
        out["step"] = collective_bytes(compiled_text(trainer._step, trainer.abstract_state, batch))
        if trainer.islands:
            sync = compiled_text(trainer._sync_step, trainer.abstract_state, batch)
            out["sync_step"] = collective_bytes(sync)
    if trainer.islands:
        h = trainer.islands.h
        out["per_step"] = ((h - 1) * out["step"]["total"] + out["sync_step"]["total"]) / h
    else:
        out["per_step"] = float(out["step"]["total"])
    return out


def main(argv=None) -> int:
    import argparse
    import os
    import sys

    from netlab.errors import UserError

    p = argparse.ArgumentParser(prog="python -m netlab.tools.hlo_comm", description=__doc__)
    p.add_argument("--config", required=True, help="configs/<file>.py[:preset]")
    p.add_argument("--devices", type=int, default=0, help="compile for this many fake CPU devices")
    args, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.devices:
        flag = f" --xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + flag
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from netlab import configlib
    from netlab.train.trainer import Trainer

    try:
        cfg = configlib.load(args.config, overrides=configlib.parse_overrides(rest))
        trainer = Trainer(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    comm = trainer_comm(trainer)
    print(f"config    {args.config}  mesh {dict(trainer.mesh.shape)}")
    for name in ("step", "sync_step"):
        if name in comm:
            parts = ", ".join(f"{k} {v:,}" for k, v in comm[name].items() if k != "total")
            print(f"{name:<9} {comm[name]['total']:,} bytes per device ({parts})")
    print(f"per step  {comm['per_step']:,.0f} bytes per device")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-device memory of large train steps under each rematerialisation policy, compiled ahead of
time (`netlab.tools.aot.measure`) for an 8-chip GPU node and a 256-chip TPU v5e pod.

    python bench/aot_memory.py                                    # every row (long: see below)
    python bench/aot_memory.py --models dit_xl --topologies 8xH100 --remat none dots full offload
    python bench/aot_memory.py --on-device --models dit_xl --topologies 8xH100   # on one GPU
    TPU_LIBRARY_PATH=/path/to/libtpu/libtpu.so python bench/aot_memory.py --libtpu \
        --topologies v5e-256                            # XLA:TPU for a v5e-256, on any machine

Rows: DiT-XL/2 (configs/diffusion/imagenet_latent_dit.py; 8xH100: the gpu preset, batch 256 on
data=8; v5e-256: the pod preset, batch 2048 on data=32 x fsdp=8) and the ~1B-parameter MoE LM
(configs/moe/lm_tiny.py:pod: 14 layers of width 1024, 8 experts of 4096, 1024 tokens, batch 256;
expert=8, fsdp over the rest), each with train.remat = none / dots / dots_no_batch / full /
offload (netlab/nn/precision.py), bf16 compute.

The 8xH100 rows are compiled for 8 fake CPU devices with the real run's mesh (this machine has no
CUDA backend): parameters, optimizer state, batch and sharding are the real run's (the `state`
column and the FLOPs are right), but XLA:CPU's temporaries do NOT show what remat saves: its
schedule keeps recomputed values alive, so `full` (forward recomputed: +33% FLOPs) reports as much
temporary memory as `none` (a 16-layer toy MLP shows the same: 672 MiB without remat, 792 MiB
with full remat). The v5e-256 rows (`--libtpu`) are compiled by XLA:TPU itself for libtpu's
compile-only devices of topology v5e:16x16: libtpu builds a TPU topology without any TPU, so a
CPU machine with libtpu (the `jax[tpu]` extra's libtpu wheel, or TPU_LIBRARY_PATH naming its
libtpu.so) gets the real per-chip memory and FLOPs, remat savings included; without --libtpu
v5e-256 is compiled for 256 fake CPU devices instead. On a GPU machine, `--on-device` compiles
DiT-XL/2 on its first chip with one chip's share of the batch (256 / 8 = 32 for 8xH100: the
per-chip program of data parallelism, all-reduce aside), which gives the real per-chip peak by
policy. `offload` moves the saved matmul outputs to host memory (`host GiB`). XLA:TPU's cost
analysis gives the MoE LM's `dots` step 1.17 TFLOP, under `none`'s 2.22: not yet explained, read
that FLOP cell with care.

Writes bench/results/aot_memory.json and .md (rows merge with an earlier run's).
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

TOPOLOGIES = {"8xH100": 8, "v5e-256": 256}
TPU_NAMES = {"v5e-256": "v5e:16x16"}  # libtpu's name of each TPU topology (--libtpu)
ON_DEVICE = "--on-device" in sys.argv
if not ON_DEVICE and "--xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""
):
    # buffer assignment (what the memory analysis reads) does not depend on LLVM's optimisation
    # level; level 0 only makes the CPU compile faster
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={max(TOPOLOGIES.values())}"
        + " --xla_backend_optimization_level=0"
    ).strip()
if not ON_DEVICE:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from netlab import configlib  # noqa: E402
from netlab.tools import aot  # noqa: E402

DIT = str(ROOT / "configs" / "diffusion" / "imagenet_latent_dit.py")
LM = str(ROOT / "configs" / "moe" / "lm_tiny.py")
REMAT = ("none", "dots", "dots_no_batch", "full", "offload")


def latents(folder):
    path = pathlib.Path(folder) / "latents.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        np.savez(
            path,
            x=rng.normal(size=(16, 32, 32, 4)).astype(np.float32),
            label=rng.integers(0, 1000, 16).astype(np.int32),
        )
    return str(path)


def config(model, topology, remat, folder):
    if model == "dit_xl":
        preset = "gpu" if topology == "8xH100" else "pod"
        over = {"data.source": "npz", "data.path": latents(folder), "train.remat": remat}
        cfg = configlib.load(DIT, preset, over)
        if ON_DEVICE:  # one chip's share of the data-parallel batch (see --on-device)
            with cfg.unlocked():
                cfg.train.batch_size = cfg.train.batch_size // TOPOLOGIES[topology]
                cfg.mesh.data, cfg.mesh.fsdp = 1, 1
        return f"{DIT}:{preset}", cfg
    return f"{LM}:pod", configlib.load(LM, "pod", {"train.remat": remat})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["dit_xl", "moe_lm"])
    ap.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES), choices=TOPOLOGIES)
    ap.add_argument("--remat", nargs="+", default=list(REMAT), choices=REMAT)
    ap.add_argument(
        "--on-device",
        action="store_true",
        help="compile on this machine's first accelerator: DiT-XL/2 only, with one chip's share "
        "of the data-parallel batch (the per-chip program of pure data parallelism)",
    )
    ap.add_argument(
        "--libtpu",
        action="store_true",
        help="compile the TPU topologies with XLA:TPU for libtpu's compile-only devices (needs "
        "libtpu: pip install 'jax[tpu]' or TPU_LIBRARY_PATH=.../libtpu.so; no TPU needed)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "aot_memory"))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    rows = (
        json.loads(out.with_suffix(".json").read_text())["rows"]
        if out.with_suffix(".json").exists()
        else []
    )
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            for topo in args.topologies:
                for remat in args.remat:
                    if args.on_device and model != "dit_xl":
                        continue  # expert parallelism needs the 8 or 256 devices themselves
                    name, cfg = config(model, topo, remat, folder)
                    t0 = time.perf_counter()
                    if args.libtpu and topo in TPU_NAMES:
                        devices = aot.tpu_topology(TPU_NAMES[topo])
                    else:
                        devices = jax.devices()[: 1 if args.on_device else TOPOLOGIES[topo]]
                    r = aot.measure(cfg, devices)
                    r.update(
                        model=model,
                        topology=topo,
                        remat=remat,
                        config=os.path.relpath(name, ROOT),
                        batch=int(cfg.train.batch_size),
                        compile_s=time.perf_counter() - t0,
                        backend=f"{devices[0].platform} ({devices[0].device_kind})",
                        command=" ".join(["python bench/aot_memory.py"] + sys.argv[1:]),
                    )
                    rows = [
                        x
                        for x in rows
                        if (x["model"], x["topology"], x["remat"]) != (model, topo, remat)
                    ] + [r]
                    print(line(r), flush=True)
                    save(out, rows)
    print(table(rows))


def gib(n):
    return "" if n is None else f"{n / 2**30:.2f}"


def line(r):
    return (
        f"{r['model']:7s} {r['topology']:8s} remat={r['remat']:13s} mesh={r['mesh']} "
        f"state {gib(r['state_bytes'])} GiB, temp {gib(r.get('temp_bytes'))} GiB, "
        f"peak {gib(r['peak_bytes'])} GiB, host {gib(r['host_temp_bytes'])} GiB, "
        f"{r['flops']:.3g} FLOP ({r['compile_s']:.0f} s)"
    )


def table(rows):
    head = (
        "| model | topology (compiled on) | batch | remat | state GiB | temporaries GiB | "
        "peak GiB | host GiB | TFLOP/step/device |\n|---|---|---|---|---|---|---|---|---|"
    )
    body = [
        f"| {r['model']} | {r['topology']} ({r['devices']} x {r.get('backend', 'cpu')}, "
        f"mesh {r['mesh']}) | "
        f"{r['batch']} | {r['remat']} | {gib(r['state_bytes'])} | {gib(r.get('temp_bytes'))} | "
        f"{gib(r['peak_bytes'])} | {gib(r['host_temp_bytes'])} | {r['flops'] / 1e12:.2f} |"
        for r in sorted(rows, key=lambda r: (r["model"], r["topology"], REMAT.index(r["remat"])))
    ]
    return "\n".join([head] + body)


def save(out, rows):
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        command="python bench/aot_memory.py",  # every row; each row names the run that made it
        jax=jax.__version__,
        backend="cpu (fake devices)",
        note=__doc__.split("\n\n")[3].replace("\n", " "),
    )
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    out.with_suffix(".md").write_text(
        "# Per-device memory of large train steps by train.remat (ahead of time)\n\n"
        f"`{meta['command']}` (jax {jax.__version__}; the JSON names the command of each row); "
        "the columns are explained in bench/aot_memory.py.\n\n"
        + meta["note"]
        + "\n\n"
        + table(rows)
        + "\n"
    )


if __name__ == "__main__":
    main()

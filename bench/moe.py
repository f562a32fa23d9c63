"""MoE benchmarks: step time vs number of experts per backend, dropped-token fraction, and an
ahead-of-time compile of the pod preset of configs/moe/lm_tiny.py with its per-device memory.

    python bench/moe.py                      # all sections (CPU: sets 8 fake devices itself)
    python bench/moe.py --sections scaling --experts 8 16 32 64 --steps 10
    python bench/moe.py --sections pod --pod-devices 32
    python bench/moe.py --sections mfu      # on a GPU: lm_tiny:gpu and dit_moe_digits:gpu

Writes bench/results/moe_<host>_<platform>.json and prints markdown tables. Step = forward +
backward of the byte-level MoE LM (width 64, 2 MoE layers, k=2, expert hidden 128, batch 32 x 64
tokens), fixed tokens and top-k while the experts grow. `ep` runs on a data=2 x expert=4 mesh of
fake devices (on CPU they share the same cores, so it measures overhead, not speedup). Steps are
timed in interleaved rounds (median), so a loaded host slows every case alike. `dropless` uses
`netlab.moe.grouped`'s "auto" grouped matmul: padded blocks on CPU, `ragged_dot` on accelerators.
"""

import argparse
import contextlib
import json
import os
import pathlib
import platform
import sys
import time

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    n = 8
    if "--pod-devices" in sys.argv:
        n = max(8, int(sys.argv[sys.argv.index("--pod-devices") + 1]))
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
    ).strip()

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from bench import perf  # noqa: E402
from netlab import configlib  # noqa: E402
from netlab.moe.lm import MoELM  # noqa: E402
from netlab.nn import aux  # noqa: E402
from netlab.sharding import mesh as meshlib  # noqa: E402

CONFIG = ROOT / "configs" / "moe" / "lm_tiny.py"
RULES = meshlib.rules(configlib.load(str(CONFIG), "cpu").sharding)


def scaling(experts, backends, steps, cf, rounds=3, batch=32, seq=64):
    """Compile every (backend, E) step first, then time them in interleaved rounds so that a
    shared host's load falls on all of them alike; report the median over rounds."""
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, seq + 1)), jnp.int32)
    cases = []
    for backend in backends:
        for e in experts:
            # 0.01 * load balance per layer, summed over the layers (no z-loss)
            model = MoELM(
                max_len=seq,
                width=64,
                depth=2,
                num_heads=4,
                mlp_hidden=128,
                moe=dict(
                    num_experts=e,
                    hidden=128,
                    k=2,
                    backend=backend,
                    capacity_factor=cf,
                    eval_capacity_factor=cf,
                    load_balance_weight=0.01,
                    z_loss_weight=0.0,
                ),
            )

            def loss(p, t, model=model):
                logits, cols = model.apply({"params": p}, t[:, :-1], True, mutable=aux.COLLECTIONS)
                lp = jax.nn.log_softmax(logits)
                ce = -jnp.take_along_axis(lp, t[:, 1:, None], -1).mean()
                return ce + aux.total_loss(cols), aux.mean_metrics(cols)["dropped_fraction"]

            ctx = []
            if backend == "ep":
                mesh = meshlib.make_mesh(
                    ml_collections.ConfigDict(dict(data=2, fsdp=1, expert=4, tensor=1)),
                    jax.devices()[:8],
                )
                ctx = [lambda: jax.set_mesh(mesh), lambda: nn.logical_axis_rules(RULES)]
            with contextlib.ExitStack() as stack:
                for c in ctx:
                    stack.enter_context(c())
                params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens[:, :-1])["params"])
                t0 = time.perf_counter()
                compiled = (
                    jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params, tokens).compile()
                )
                compile_s = time.perf_counter() - t0
                (_, dropped), _ = jax.block_until_ready(compiled(params, tokens))
            nparams = sum(x.size for x in jax.tree.leaves(params))
            cases.append(
                dict(
                    fn=compiled,
                    params_tree=params,
                    times=[],
                    row=dict(
                        backend=backend,
                        experts=e,
                        params=int(nparams),
                        compile_s=compile_s,
                        dropped_fraction=float(dropped),
                        capacity_factor=cf,
                    ),
                )
            )
            print(f"  compiled {backend:9s} E={e:3d} in {compile_s:5.1f}s", flush=True)
    for _ in range(rounds):
        for c in cases:
            jax.block_until_ready(c["fn"](c["params_tree"], tokens))  # warm
            for _ in range(steps):
                t = time.perf_counter()
                jax.block_until_ready(c["fn"](c["params_tree"], tokens))
                c["times"].append(time.perf_counter() - t)
    rows = []
    for c in cases:
        r = dict(
            c["row"],
            step_ms=1e3 * float(np.median(c["times"])),
            step_ms_min=1e3 * float(np.min(c["times"])),
        )
        rows.append(r)
        print(
            f"  {r['backend']:9s} E={r['experts']:3d} params={r['params'] / 1e6:6.2f}M "
            f"step={r['step_ms']:8.2f} ms "
            f"dropped={r['dropped_fraction']:.3f}",
            flush=True,
        )
    return rows


def pod(num_devices, fsdp, seq_len, batch):
    """AOT-compile the pod preset's train step on `num_devices` fake CPU devices (expert=8)."""
    from netlab.train.trainer import Trainer

    batch = max(batch, num_devices)  # one row per device at least (the trainer checks it)
    cfg = configlib.load(
        str(CONFIG),
        "pod",
        {
            "mesh.fsdp": fsdp,
            "mesh.data": num_devices // (8 * fsdp),
            "data.seq_len": seq_len,
            "train.batch_size": batch,
        },
    )
    t0 = time.perf_counter()
    trainer = Trainer(cfg, devices=jax.devices()[:num_devices])
    batch_abs = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((batch, seq_len + 1), jnp.int32, sharding=s),
        trainer.batch_shardings,
    )
    with trainer.context():
        lowered = trainer._step.lower(trainer.abstract_state, batch_abs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    hlo = compiled.as_text()
    out = dict(
        devices=num_devices,
        mesh=dict(trainer.mesh.shape),
        params=trainer.num_params(),
        seq_len=seq_len,
        batch=batch,
        lower_s=t1 - t0,
        compile_s=t2 - t1,
        all_to_all=hlo.count("all-to-all("),
        all_gather=hlo.count("all-gather("),
        per_device_bytes=None,
    )
    if mem is not None:
        out.update(
            argument_bytes=int(mem.argument_size_in_bytes),
            output_bytes=int(mem.output_size_in_bytes),
            temp_bytes=int(mem.temp_size_in_bytes),
            alias_bytes=int(mem.alias_size_in_bytes),
        )
        out["per_device_bytes"] = (
            out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
        )
    print(
        f"  pod preset: {out['params'] / 1e9:.3f}B params on mesh {out['mesh']}, "
        f"compile {out['compile_s']:.1f}s, per-device "
        f"{None if out['per_device_bytes'] is None else round(out['per_device_bytes'] / 2**30, 2)}"
        f" GiB, "
        f"all-to-all ops {out['all_to_all']}",
        flush=True,
    )
    return out


def mfu(configs, steps):
    """Train-step time of full configs through the Trainer, with FLOPs per device from XLA's cost
    analysis (hardware FLOPs: router and dispatch einsums included) and MFU against the chip's
    dense bf16 peak. On CPU there is no peak, so only TFLOP/s is reported."""
    from netlab.train.trainer import Trainer

    kind = jax.devices()[0].device_kind
    peak = perf.peak_tflops(kind)  # dense bf16 peak (bench/perf.py)
    rows = []
    for spec in configs:
        path, _, preset = spec.partition(":")
        cfg = configlib.load(str(ROOT / path), preset or None)
        trainer = Trainer(cfg)
        state = trainer.init_state()
        batch = trainer.global_batch(0)
        with trainer.context():
            t0 = time.perf_counter()
            compiled = trainer._step.lower(state, batch).compile()
            compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", 0.0)) if cost else 0.0
        for i in range(2):  # warm-up
            state, _ = trainer.train_step(state, trainer.global_batch(i))
        jax.block_until_ready(state)
        times = []
        for i in range(steps):
            b = trainer.global_batch(2 + i)
            t = time.perf_counter()
            state, m = trainer.train_step(state, b)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
        sec = float(np.median(times))
        tflops = flops / sec / 1e12
        row = dict(
            config=spec,
            params=trainer.num_params(),
            mesh=dict(trainer.mesh.shape),
            step_ms=1e3 * sec,
            compile_s=compile_s,
            flops_per_device=flops,
            tflops_per_device=tflops,
            mfu=(tflops / peak) if peak else None,
            device=kind,
        )
        rows.append(row)
        print(
            f"  {spec}: {row['params'] / 1e6:.1f}M params, step {1e3 * sec:.1f} ms, "
            f"{tflops:.4f} TFLOP/s/device, "
            f"MFU {'n/a' if peak is None else f'{tflops / peak:.1%}'}",
            flush=True,
        )
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", nargs="+", default=["scaling", "pod"], help="scaling pod mfu")
    ap.add_argument(
        "--mfu-configs",
        nargs="+",
        default=["configs/moe/lm_tiny.py:gpu", "configs/moe/dit_moe_digits.py:gpu"],
    )
    ap.add_argument("--experts", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--backends", nargs="+", default=["dense", "capacity", "dropless", "ep"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--capacity-factor", type=float, default=1.25)
    ap.add_argument("--pod-devices", type=int, default=8)
    ap.add_argument("--pod-fsdp", type=int, default=1)
    ap.add_argument("--pod-seq", type=int, default=1024)
    ap.add_argument("--pod-batch", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    dev = jax.devices()[0]
    result = dict(
        host=platform.node(),
        platform=dev.platform,
        device=dev.device_kind,
        jax=jax.__version__,
        cpu_count=os.cpu_count(),
    )
    if "scaling" in args.sections:
        print("step time vs experts (forward+backward):", flush=True)
        result["scaling"] = scaling(
            args.experts,
            args.backends,
            args.steps,
            args.capacity_factor,
            args.rounds,
            args.batch,
            args.seq,
        )
        print("\n| backend | " + " | ".join(f"E={e}" for e in args.experts) + " | E_max/E_min |")
        print("|---" * (len(args.experts) + 2) + "|")
        for b in args.backends:
            ms = [r["step_ms"] for r in result["scaling"] if r["backend"] == b]
            print(
                f"| {b} | " + " | ".join(f"{m:.1f} ms" for m in ms) + f" | {ms[-1] / ms[0]:.2f}x |"
            )
    if "pod" in args.sections:
        print("AOT compile of the pod preset:", flush=True)
        result["pod"] = pod(args.pod_devices, args.pod_fsdp, args.pod_seq, args.pod_batch)
    if "mfu" in args.sections:
        print("train-step MFU:", flush=True)
        result["mfu"] = mfu(args.mfu_configs, args.steps)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"moe_{platform.node()}_{dev.platform}.json"
    if path.exists():  # keep sections measured by an earlier run
        result = dict(json.loads(path.read_text()), **result)
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

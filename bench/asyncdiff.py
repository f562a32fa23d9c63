"""AsyncDiff on the 8 fake CPU devices: speed-up over sequential stages, and the quality gap.

    nice -n 19 python bench/asyncdiff.py > runs/asyncdiff.log 2>&1 &

Speed: an untrained MLP denoiser (width 256, 8 blocks, batch 256, 25 DDIM steps) split into
N = 2 and 4 stages; AsyncDiff (3 warm-up steps, stride 1 and 2) against the same stages run
sequentially (warm-up over every step: N stage latencies per step) and against the unsplit sampler
on one device. NOTE: the fake CPU devices are threads of one process sharing this machine's cores
(2 here), so N stages cannot run N times faster: the numbers show the schedule works and what it
costs, not a GPU speed-up (on N real devices the ideal is N x for stride 1).

Quality: configs/diffusion/toy2d.py trained for 1000 steps with 4 blocks, split into 2 and 4
stages; the final samples of AsyncDiff with stride 1 (stage inputs one step old) and stride 2
(two steps old), 3 warm-up steps of 25, against sequential sampling from the same noise: mean
squared difference, and the sliced 1-Wasserstein distance of each to fresh data.
Writes bench/results/asyncdiff.{json,md}.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from netlab import configlib  # noqa: E402
from netlab.diffusion import asyncdiff, metrics, mlp  # noqa: E402
from netlab.diffusion.task import _noise_cond  # noqa: E402
from netlab.train.trainer import Trainer  # noqa: E402

STEPS, WARMUP, REPEAT = 25, 3, 3
NOTE = (
    "fake CPU devices share the machine's cores (2 here): this is not a GPU speed-up; on N real "
    "devices the ideal is N x (stride 1)"
)


def timed(fn):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def speed():
    model = mlp.MlpDenoiser(dim=2, width=256, depth=8)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))["params"]
    staged = asyncdiff.mlp_stages(model, params)
    x = jax.random.normal(jax.random.key(1), (256, 2))
    grid = jnp.asarray(np.linspace(-10, 10, STEPS + 1), jnp.float32)
    kw = dict(kind="v", noise_cond=_noise_cond)
    one = jax.jit(lambda x: asyncdiff.reference(staged, x, grid, num_stages=1, warmup=STEPS, **kw))
    rows = [dict(schedule="unsplit, 1 device", seconds=timed(lambda: one(x)))]
    for n in (2, 4):
        run = asyncdiff.sampler(staged, num_stages=n, warmup=STEPS, **kw)
        seq = timed(lambda: run(x, grid))
        rows.append(dict(schedule=f"N={n} sequential", stages=n, seconds=seq))
        for s in (1, 2):
            run = asyncdiff.sampler(staged, num_stages=n, warmup=WARMUP, stride=s, **kw)
            t = timed(lambda: run(x, grid))
            rows.append(
                dict(
                    schedule=f"N={n} AsyncDiff stride {s} ({n + s - 1} devices)",
                    stages=n,
                    stride=s,
                    seconds=t,
                    speedup_vs_sequential=seq / t,
                )
            )
        print(rows[-3:], flush=True)
    return rows


def quality():
    cfg = configlib.load(
        "configs/diffusion/toy2d.py:cpu", overrides={"model.depth": "4", "train.steps": "1000"}
    )
    trainer = Trainer(cfg, devices=jax.devices()[:1])
    state = trainer.init_state()
    for step in range(1000):
        state, _ = trainer.train_step(state, trainer.global_batch(step))
    task, params = trainer.task, trainer.eval_params(state)
    staged = asyncdiff.mlp_stages(task.model, params)
    grid = task.sampling_grid(STEPS)
    x = jax.random.normal(jax.random.key(7), (4000, 2))
    real = np.asarray(task.mixture.sample(jax.random.key(8), 4000))
    kw = dict(kind=task.kind, noise_cond=_noise_cond)
    seq = np.asarray(asyncdiff.sample(staged, x, grid, num_stages=2, warmup=STEPS, **kw))
    rows = [dict(schedule="sequential", sliced_w1=metrics.sliced_wasserstein(seq, real))]
    for n in (2, 4):
        for s in (1, 2):
            out = asyncdiff.sample(staged, x, grid, num_stages=n, warmup=WARMUP, stride=s, **kw)
            out = np.asarray(out)
            rows.append(
                dict(
                    schedule=f"N={n} stride {s} (inputs {s} step{'s' if s > 1 else ''} old)",
                    mse_vs_sequential=float(np.mean((out - seq) ** 2)),
                    sliced_w1=metrics.sliced_wasserstein(out, real),
                )
            )
    print(rows, flush=True)
    return rows


def main():
    print("NOTE:", NOTE, flush=True)
    result = dict(note=NOTE, steps=STEPS, warmup=WARMUP, speed=speed(), quality=quality())
    out = ROOT / "bench" / "results"
    (out / "asyncdiff.json").write_text(json.dumps(result, indent=1))
    lines = ["# AsyncDiff on fake CPU devices (bench/asyncdiff.py)", "", f"**Note:** {NOTE}.", ""]
    lines += [
        f"Speed: MLP width 256, 8 blocks, batch 256, {STEPS} DDIM steps, {WARMUP} warm-up "
        f"steps; median of {REPEAT}.",
        "",
        "| schedule | seconds | speed-up vs sequential |",
        "|---|---|---|",
    ]
    for r in result["speed"]:
        sp = r.get("speedup_vs_sequential")
        lines.append(
            f"| {r['schedule']} | {r['seconds']:.3f} | {'' if sp is None else f'{sp:.2f}x'} |"
        )
    lines += [
        "",
        f"Quality: toy2d MLP (4 blocks, 1000 steps), 4000 samples, {STEPS} steps, same noise.",
        "",
        "| schedule | MSE vs sequential | sliced W1 to data |",
        "|---|---|---|",
    ]
    for r in result["quality"]:
        mse = r.get("mse_vs_sequential")
        lines.append(
            f"| {r['schedule']} | {'' if mse is None else f'{mse:.2e}'} | {r['sliced_w1']:.4f} |"
        )
    (out / "asyncdiff.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

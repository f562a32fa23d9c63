"""bfloat16 vs float32 training on two real tasks, over seeds (issue 19, item 2).

    nice -n 19 python bench/bf16.py > runs/bf16.log 2>&1    # ~40 min, 2-core VM at load ~18
    python bench/bf16.py --tasks moe --seeds 0 1            # a shorter subset

Each case is one `python -m netlab.main` run in a subprocess (the public CLI, so the trainer, the
task and the precision policy are exactly what a user gets), with `train.compute_dtype` float32 or
bfloat16 and `seed` 0, 1, 2:

- `dit`: configs/diffusion/digits_dit.py:cpu, scaled down from 1500 to `--dit-steps` (default 150)
  steps (warm-up scaled alike, 200/1500 of the run) so one run stays under ~4 minutes on this
  2-core CPU (the shared host ran at load ~18, 0.4 steps/s, when the table was measured);
  metric eval/digits_fd (the Frechet distance of 1000 samples to the digits set, lower is
  better) at the last step.
- `moe`: configs/moe/lm_tiny.py:cpu as shipped (400 steps, 8 fake devices, expert parallelism);
  metric eval/valid_loss (bytes' cross-entropy, nats) at the last step.

"within spread" asks whether the bf16 mean lies inside the float32 seeds' [min, max] widened by
the float32 standard deviation: with three seeds a tighter test would flag noise. On CPU bfloat16
is emulated (no bf16 units on this host), so only the numerics are measured here, not speed.
Results: bench/results/bf16.{json,md}; per-run logs and workdirs under runs/bf16/.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlab.metrics.writers import read_jsonl  # noqa: E402

TASKS = {
    "dit": dict(
        config="configs/diffusion/digits_dit.py:cpu",
        metric="eval/digits_fd",
        lower_is_better=True,
        devices=1,
    ),
    "moe": dict(
        config="configs/moe/lm_tiny.py:cpu",
        metric="eval/valid_loss",
        lower_is_better=True,
        devices=8,
    ),
}
DTYPES = ("float32", "bfloat16")


def last_metric(path, name):
    """(step, value) of the last record of metrics.jsonl that carries `name`."""
    found = None
    for rec in read_jsonl(path):
        flat = dict(rec)
        for k, v in rec.items():
            if isinstance(v, dict):  # nested {"eval": {...}} layout
                flat.update({f"{k}/{kk}": vv for kk, vv in v.items()})
        if name in flat:
            found = (flat.get("step"), float(flat[name]))
    return found


def run_case(task, dtype, seed, steps, out_root):
    spec = TASKS[task]
    workdir = out_root / f"{task}_{dtype}_s{seed}"
    metrics = workdir / "metrics.jsonl"
    args = [
        sys.executable,
        "-m",
        "netlab.main",
        "--config",
        spec["config"],
        "--workdir",
        str(workdir),
        f"--config.train.compute_dtype={dtype}",
        f"--config.seed={seed}",
    ]
    # evaluate (and checkpoint) only at the end: the metric is the final one
    args += [f"--config.train.steps={steps}", f"--config.train.eval_every={steps}"]
    args += [f"--config.checkpoint.every={steps}"]
    if task == "dit":  # the config's 200 warm-up steps of 1500, scaled to the shorter run
        args += [f"--config.optimizer.warmup_steps={max(1, round(steps * 200 / 1500))}"]
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
    if metrics.exists() and last_metric(metrics, spec["metric"]):
        step, value = last_metric(metrics, spec["metric"])
        if step == steps:
            return dict(step=step, value=value, seconds=None, resumed=True)
    t0 = time.time()
    with open(out_root / f"{task}_{dtype}_s{seed}.log", "w") as log:
        rc = subprocess.call(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"{task} {dtype} seed {seed}: exit {rc}, see {log.name}")
    step, value = last_metric(metrics, spec["metric"])
    return dict(step=step, value=value, seconds=round(time.time() - t0, 1))


def summarise(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(mean=mean, std=std, min=min(values), max=max(values))


def verdict(f32, bf16):
    """bf16 mean inside the f32 [min - std, max + std] band (see the module docstring)."""
    lo, hi = f32["min"] - f32["std"], f32["max"] + f32["std"]
    return lo <= bf16["mean"] <= hi


def markdown(res):
    lines = [
        "# bfloat16 vs float32 training (bench/bf16.py)",
        "",
        f"Command: `{res['command']}`; host: {res['host']}.",
        "",
        "| task | metric | steps | dtype | per seed | mean | std | bf16 within f32 spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, t in res["tasks"].items():
        for dtype in DTYPES:
            if dtype not in t["summary"]:
                continue
            s = t["summary"][dtype]
            per = ", ".join(f"{r['value']:.4g}" for r in t["runs"][dtype])
            ok = "" if dtype == "float32" else ("yes" if t.get("within_spread") else "no")
            lines.append(
                f"| {task} | {t['metric']} | {t['steps']} | {dtype} | {per} | {s['mean']:.4g} "
                f"| {s['std']:.3g} | {ok} |"
            )
    lines += ["", res["note"], ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--dit-steps", type=int, default=150)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "bf16"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "bf16"))
    a = p.parse_args()
    out_root = pathlib.Path(a.runs)
    out_root.mkdir(parents=True, exist_ok=True)
    res = dict(
        command="nice -n 19 python bench/bf16.py " + " ".join(sys.argv[1:]),
        host=f"{os.cpu_count()}-core CPU VM, shared (load beside each run in the log)",
        note=(
            "bf16 = train.compute_dtype=bfloat16: float32 parameters and optimizer, bfloat16 "
            "activations and matmuls, float32 where docs/precision.md lists. Spread test: bf16 "
            "mean within [f32 min - f32 std, f32 max + f32 std]. The DiT runs 150 of its "
            "config's 1500 steps: early in training (FD ~171; 1500 steps reach ~6), so its rows "
            "show that bf16 follows the float32 trajectory, not end-of-training quality. A run "
            "resumed from runs/bf16/ keeps the seconds and load of the table it was measured for."
        ),
        tasks={},
    )
    out_json = pathlib.Path(a.out + ".json")
    before = json.loads(out_json.read_text())["tasks"] if out_json.exists() else {}
    for task in a.tasks:
        steps = a.dit_steps if task == "dit" else 400  # 400: lm_tiny.py's own train.steps
        t = dict(metric=TASKS[task]["metric"], steps=steps, runs={}, summary={})
        res["tasks"][task] = t
        for seed in a.seeds:  # seed-major: a cut-short run still has both dtypes per seed
            for dtype in DTYPES:
                r = run_case(task, dtype, seed, steps, out_root)
                r["seed"] = seed
                r["load"] = os.getloadavg()[0]
                if r.get("resumed"):  # keep the timing measured when the run was made
                    old = before.get(task, {}).get("runs", {}).get(dtype, [])
                    old = [x for x in old if x.get("seed") == seed and x["value"] == r["value"]]
                    if old:
                        r.update(seconds=old[0].get("seconds"), load=old[0].get("load"))
                t["runs"].setdefault(dtype, []).append(r)
                print(task, dtype, seed, r, flush=True)
                t["summary"] = {
                    d: summarise([x["value"] for x in rs]) for d, rs in t["runs"].items()
                }
                if len(t["summary"]) == 2:
                    t["within_spread"] = verdict(t["summary"]["float32"], t["summary"]["bfloat16"])
                pathlib.Path(a.out + ".json").write_text(json.dumps(res, indent=1))
                pathlib.Path(a.out + ".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()

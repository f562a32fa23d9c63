"""Every diffusion backbone and routing scheme on digits: size, cost, speed and FD (issue 14).

    nice -n 19 python bench/diffusion_backbones.py --steps 200 --batch-size 32 \
        --num-samples 500 --eval-every 50 > runs/diffusion_backbones.log 2>&1
    # the table in bench/results (a shared 2-core VM at load ~18); the configs' own batch is 128
    python bench/diffusion_backbones.py --only dit,tread --steps 100    # a subset

One row per registered backbone at its digits config (the route each config's docstring lists),
plus DiT with each routing scheme. Per row, two subprocesses (so each row compiles in a fresh
process and the training is exactly what a user gets):
1. `python bench/diffusion_backbones.py --cost ROW`: builds the row's `Trainer` on one device,
   lowers its training step for the abstract state and reports the parameter count and XLA's
   cost analysis of that step ("flops": one forward + backward + optimizer update of one batch;
   a loop body counts once, so a scanned model would be under-counted -- none of these rows
   scans its blocks). The analysis is of the lowered HLO, before XLA's optimisation passes: on
   this loaded host compiling costs ~2 minutes a row and the count barely moves (DiT: 2.633
   GFLOP lowered vs 2.645 GFLOP compiled). `--recost` redoes only this for the finished rows.
2. `python -m netlab.main --config ROUTE --workdir runs/diffusion_backbones/ROW` for `--steps`
   steps (warm-up scaled from the configs' 200 of 1500 steps), evaluating the digits Frechet
   distance of `--num-samples` samples every `--eval-every` steps (EMA weights, the configs'
   sampler), logging every 10 steps.
The step time is the median over the 10-step logging windows of the seconds per step, without
the first window (compilation) and the windows that start at an evaluation (which they include).
"FD at the same wall time" takes plain DiT's training time for `--steps` steps (steps x its step
time) as the budget: a row gets budget / its step time steps and reports the FD of its last
evaluation within them (a row faster than DiT would train past `--steps`; it is marked ">" and
reports its FD at `--steps`). "steps to DiT's FD": the first evaluation whose FD is at most plain
DiT's final FD (resolution `--eval-every`), or "not in N". The host is a shared 2-core VM: every
row records the 1-minute load average before and after it; step times move with the load.

Same-recipe rows `B@R` (last in the default run; pick with --only): backbone B with
the training recipe of row R, the config sections `RECIPES` names copied from R's config (e.g.
`dit@edm2_recipe`: DiT with the EDM2 U-Net's optimizer; `edm2_unet@dit_recipe`: the U-Net with
DiT's loss, sampler and optimizer), so a backbone comparison is not a recipe comparison.

Resumable and merging: bench/results/diffusion_backbones.json is read, updated with every
finished row and rewritten (rows of earlier runs are kept, each with the command that made it);
a row with results for the same settings is skipped (`--force` reruns); a finished workdir is
re-read, not retrained. The markdown is regenerated from all rows; its hand-written "## Notes"
section (run conditions) is carried over. Results: bench/results/diffusion_backbones.{json,md};
logs under runs/.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlab.metrics.writers import read_jsonl  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "diffusion_backbones"
RUNS = ROOT / "runs" / "diffusion_backbones"
ROWS = {  # row -> (config route, what it is); DiT and its routing schemes first
    "dit": ("configs/diffusion/digits_dit.py:cpu", "DiT-4, 128 wide, patch 2 (the reference)"),
    "dit+tread": ("configs/diffusion/digits_routing.py:routing=tread", "DiT, TREAD route 1-2"),
    "dit+dtr": ("configs/diffusion/digits_routing.py:routing=dtr", "DiT, DTR masks"),
    "dit+token_routing": (
        "configs/diffusion/digits_rin.py:backbone=dit,routing=dynamic",
        "DiT, dynamic token routing, budget 0.7",
    ),
    "unet": ("configs/diffusion/digits_uvit.py:backbone=unet", "ADM U-Net 64 x (1, 2)"),
    "uvit": ("configs/diffusion/digits_uvit.py:backbone=uvit", "U-ViT, multiscale loss"),
    "dic": ("configs/diffusion/digits_uvit.py:backbone=dic", "DiC conv hourglass"),
    "dimr": ("configs/diffusion/digits_uvit.py:backbone=dimr", "DiMR, per-branch loss"),
    "rin": ("configs/diffusion/digits_rin.py:backbone=rin", "RIN, latent self-cond"),
    "flowdcn": ("configs/diffusion/digits_rin.py:backbone=flowdcn", "FlowDCN, flow matching"),
    "edm2_unet": ("configs/diffusion/digits_edm2.py:backbone=edm2_unet", "EDM2 MP U-Net"),
    # Same-recipe rows (settle digits_edm2's default backbone): a backbone trained with another
    # row's recipe, i.e. RECIPES' config sections copied over its own config.
    "dit@edm2_recipe": (
        "configs/diffusion/digits_edm2.py:backbone=dit",
        "DiT, EDM2 U-Net's optimizer (lr 1e-2, inv_sqrt)",
    ),
    "dit@edm2_recipe_lr1e-3": (
        "configs/diffusion/digits_edm2.py:backbone=dit",
        "DiT, EDM2 U-Net's optimizer at lr 1e-3",
    ),
    "edm2_unet@dit_recipe": (
        "configs/diffusion/digits_edm2.py:backbone=edm2_unet",
        "EDM2 MP U-Net, DiT's loss, sampler, optimizer",
    ),
}
# row -> (config whose recipe it takes, the sections copied from it, then fixed values). The
# digits_edm2 DiT already has EDM2's preconditioning, loss, sampler and EMAs: only the optimizer
# differs. Forced weight norm stays off for DiT (it has no `mp_weight`: it would be a no-op).
EDM2_UNET = "configs/diffusion/digits_edm2.py:backbone=edm2_unet"
RECIPES = {
    "dit@edm2_recipe": (EDM2_UNET, ("optimizer",), {"optimizer.forced_weight_norm": False}),
    "dit@edm2_recipe_lr1e-3": (
        EDM2_UNET,
        ("optimizer",),
        {"optimizer.forced_weight_norm": False, "optimizer.lr": 1e-3},
    ),
    "edm2_unet@dit_recipe": (
        "configs/diffusion/digits_dit.py:cpu",
        ("diffusion", "optimizer", "model.learn_logvar"),
        {"optimizer.forced_weight_norm": False},
    ),
}
LOG_EVERY = 10


def registered(row):
    """Whether the row's backbone is registered now (edm2_unet may not be)."""
    from netlab.diffusion.registries import BACKBONES

    return backbone(row) in BACKBONES.names()


def backbone(row):
    return row.split("@")[0].split("+")[0]


def _flat(node, prefix):
    if not hasattr(node, "items"):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}.{k}"))
    return out


def recipe_overrides(row):
    """{key: text} setting the `RECIPES` sections of `row`'s config to the source config's values
    (only the keys that differ and exist in both), then the row's fixed values."""
    if row not in RECIPES:
        return {}
    from netlab import configlib

    source, sections, fixed = RECIPES[row]
    own, src = configlib.load(ROWS[row][0]), configlib.load(source)
    out = {}
    for sec in sections:
        node_own, node_src = own, src
        for part in sec.split("."):
            node_own, node_src = node_own[part], node_src[part]
        mine = _flat(node_own, sec)
        for k, v in _flat(node_src, sec).items():
            if k in mine and mine[k] != v:
                out[k] = v
    out.update(fixed)
    return {k: v if isinstance(v, str) else repr(v) for k, v in out.items()}


def cost(row, steps, num_samples, batch_size):
    """(params, flops of the lowered training step) of `row` on one device (--cost mode)."""
    import jax

    from netlab import configlib
    from netlab.train.trainer import Trainer

    cfg = configlib.load(ROWS[row][0], overrides=overrides(row, steps, num_samples, batch_size))
    trainer = Trainer(cfg, devices=jax.devices()[:1])
    batch = trainer.global_batch(0)
    with trainer.context():
        t0 = time.perf_counter()
        lowered = trainer.step_fn(0).lower(trainer.abstract_state, batch)
        analysis = lowered.cost_analysis()
        seconds = time.perf_counter() - t0
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    flops = float(analysis["flops"])
    return dict(params=trainer.num_params(), flops=flops, flops_of="lowered", trace_s=seconds)


def overrides(row, steps, num_samples, batch_size):
    return recipe_overrides(row) | {
        "train.steps": str(steps),
        "train.batch_size": str(batch_size),
        "train.log_every": str(LOG_EVERY),
        "checkpoint.every": str(steps),
        "eval.num_samples": str(num_samples),
        "optimizer.warmup_steps": str(max(1, round(steps * 200 / 1500))),
    }


def env_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    # the FD's feature network is trained once and shared by every row's process
    env.setdefault("NETLAB_FD_CACHE_DIR", str(RUNS.parent / "diffusion_backbones_fd_cache"))
    return env


def read_run(metrics_path):
    """({step: fd}, [seconds per step of each clean logging window], floor): a window is clean
    unless it is the first (compilation) or starts at an evaluation (whose time it includes)."""
    fds, rates, floor = {}, {}, None
    for rec in read_jsonl(metrics_path):
        if "eval/digits_fd" in rec:
            fds[int(rec["step"])] = float(rec["eval/digits_fd"])
            floor = rec.get("eval/digits_fd_real_floor", floor)
        if "train/steps_per_sec" in rec:
            rates[int(rec["step"])] = float(rec["train/steps_per_sec"])
    windows = [1.0 / r for s, r in rates.items() if s > LOG_EVERY and s - LOG_EVERY not in fds]
    return fds, windows, floor


def run_cost(row, args):
    out = subprocess.run(
        [sys.executable, __file__, "--cost", row, "--steps", str(args.steps)]
        + ["--num-samples", str(args.num_samples), "--batch-size", str(args.batch_size)],
        cwd=ROOT,
        env=env_one_device(),
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"{row}: cost analysis failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_row(row, args):
    RUNS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    log = RUNS.parent / f"diffusion_backbones_{row.replace('+', '_')}.log"
    res = run_cost(row, args)
    workdir = RUNS / row.replace("+", "_")
    metrics = workdir / "metrics.jsonl"
    done = metrics.exists() and args.steps in read_run(metrics)[0] and not args.force
    t0 = time.time()
    if not done:
        shutil.rmtree(workdir, ignore_errors=True)  # no checkpoint before the last step
        cmd = [sys.executable, "-m", "netlab.main", "--config", ROWS[row][0]]
        cmd += ["--workdir", str(workdir)]
        cmd += [
            f"--config.{k}={v}"
            for k, v in overrides(row, args.steps, args.num_samples, args.batch_size).items()
        ]
        cmd += [f"--config.train.eval_every={args.eval_every}"]
        with open(log, "w") as f:
            rc = subprocess.call(cmd, cwd=ROOT, env=env_one_device(), stdout=f, stderr=f)
        if rc:
            raise SystemExit(f"{row}: training exited {rc}; see {log}")
    fds, windows, floor = read_run(metrics)
    res.update(
        config=ROWS[row][0],
        what=ROWS[row][1],
        step_s=statistics.median(windows),
        fd={str(k): v for k, v in sorted(fds.items())},
        fd_floor=floor,
        wall_s=round(time.time() - t0, 1),
        load=[round(load_before, 1), round(os.getloadavg()[0], 1)],
        steps=args.steps,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
    )
    return res


def derived(results, steps):
    """Same-wall-time FD and steps to plain DiT's final FD, for every row with a DiT reference."""
    ref = results.get("dit")
    if not ref:
        return
    budget = steps * ref["step_s"]
    target = ref["fd"][str(steps)]
    for r in results.values():
        fd = {int(k): v for k, v in r["fd"].items()}
        can = budget / r["step_s"]
        within = [s for s in fd if s <= can]
        r["budget_steps"] = round(can)
        r["fd_same_time"] = fd[max(within)] if within else None
        r["fd_same_time_step"] = max(within) if within else None
        reached = sorted(s for s, v in fd.items() if v <= target)
        r["steps_to_dit_fd"] = reached[0] if reached else None


def markdown(results, args, notes=""):
    """The table of every row in `results`; `notes` (the old md's "## Notes" section, written by
    hand) is kept as it is."""
    by_command = {}
    for row, r in results.items():
        by_command.setdefault(r.get("command", "?"), []).append(row)
    commands = "; ".join(f"`{c}` ({', '.join(rows)})" for c, rows in by_command.items())
    lines = [
        "# Diffusion backbones and routing on digits (bench/diffusion_backbones.py)",
        "",
        f"Commands (rows): {commands}. {args.steps} steps of batch {args.batch_size} per row "
        f"(warm-up "
        f"{max(1, round(args.steps * 200 / 1500))}), digits FD of {args.num_samples} samples "
        f"(EMA weights, each config's sampler) every {args.eval_every} steps; one CPU device of a "
        "shared 2-core VM (load = 1-minute load average before / after the row). FLOPs: XLA's "
        "cost analysis of the lowered training step (forward + backward + update). Same wall "
        "time: plain DiT's time for the run, i.e. the row's FD at its last evaluation within "
        "DiT's steps x step time (`>`: the row is faster and would train on; FD at the last step). "
        "Rows `B@R`: backbone B trained with row R's recipe (the config sections the bench's "
        "RECIPES names, copied from R's config; the overrides are in the json).",
        "",
        "| row | what | params | GFLOP/step | s/step | FD @ steps | FD @ DiT's wall time "
        "(step) | steps to DiT's final FD | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row, r in results.items():
        fd_n = r["fd"][str(args.steps)]
        same = "-"
        if r.get("fd_same_time") is not None:
            mark = ">" if r["budget_steps"] > args.steps else ""
            same = f"{r['fd_same_time']:.1f} ({mark}{r['fd_same_time_step']})"
        reach = r.get("steps_to_dit_fd")
        reach = f"{reach}" if reach is not None else f"not in {args.steps}"
        lines.append(
            f"| {row} | {r['what']} | {r['params'] / 1e6:.2f} M | {r['flops'] / 1e9:.2f} | "
            f"{r['step_s']:.3f} | {fd_n:.1f} | {same} | {reach} | "
            f"{r['load'][0]} / {r['load'][1]} |"
        )
    missing = [r for r in ROWS if r not in results]
    if missing:
        lines += ["", f"Not measured yet: {', '.join(missing)}."]
    floors = [r["fd_floor"] for r in results.values() if r.get("fd_floor") is not None]
    if floors:
        lines += [
            "",
            f"FD floor (training images vs the test set, {args.num_samples} images): "
            f"{floors[0]:.1f}. FD curves (step: FD) are in diffusion_backbones.json.",
        ]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def old_notes(path):
    """The hand-written "## Notes" section of the old markdown (kept across reruns)."""
    text = path.read_text() if path.exists() else ""
    return text[text.index(NOTES) :] if NOTES in text else ""


NOTES = "## Notes"


def old_command(path):
    return json.loads(path.read_text())["command"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128, help="the configs' batch: 128")
    p.add_argument("--eval-every", type=int, default=0, help="default: steps / 6")
    p.add_argument("--only", default="", help="comma-separated rows, e.g. dit,dit+tread")
    p.add_argument("--force", action="store_true", help="rerun rows that have results")
    p.add_argument("--recost", action="store_true", help="redo params and FLOPs of done rows")
    p.add_argument("--cost", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cost:
        print(json.dumps(cost(args.cost, args.steps, args.num_samples, args.batch_size)))
        return
    args.eval_every = args.eval_every or max(1, args.steps // 6)
    rows = [r for r in (args.only.split(",") if args.only else ROWS) if r]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise SystemExit(f"unknown rows {bad}; choose from {', '.join(ROWS)}")
    path = RESULTS.with_suffix(".json")
    results = json.loads(path.read_text())["rows"] if path.exists() else {}
    command = "python bench/diffusion_backbones.py " + " ".join(sys.argv[1:])
    for row in rows:
        old = results.get(row, {})
        if args.recost:  # params and FLOPs only, by today's method; the training is kept
            if old and old.get("flops_of") != "lowered":
                old.pop("compile_s", None)
                old.update(run_cost(row, args))
                command = old_command(path)
                path.write_text(json.dumps(dict(command=command, rows=results), indent=1))
                md = RESULTS.with_suffix(".md")
                md.write_text(markdown(results, args, old_notes(md)))
            continue
        same = (old.get("steps"), old.get("num_samples"), old.get("batch_size")) == (
            args.steps,
            args.num_samples,
            args.batch_size,
        )
        if same and not args.force:
            print(f"{row}: done, skipped", flush=True)
            continue
        if not registered(row):
            print(f"{row}: backbone not registered, skipped", flush=True)
            continue
        print(f"{row}: running (load {os.getloadavg()[0]:.1f})", flush=True)
        results[row] = run_row(row, args)
        results[row]["command"] = command
        results[row]["overrides"] = recipe_overrides(row)
        derived(results, args.steps)
        r = results[row]
        print(f"{row}: {r['params']} params, {r['step_s']:.3f} s/step, FD {r['fd']}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(command=command, rows=results), indent=1))
        md = RESULTS.with_suffix(".md")
        md.write_text(markdown(results, args, old_notes(md)))


if __name__ == "__main__":
    main()

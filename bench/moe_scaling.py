"""Fit the routed-LM scaling law (Clark et al. 2022, netlab/moe/scaling_law.py) on small MoE LMs.

    nice -n 19 python bench/moe_scaling.py --out bench/results > runs/moe_scaling.log 2>&1 &

A grid of byte-level MoE LMs (configs/moe/lm_tiny.py: Python's pydoc_data text, seq 64, batch 32)
over the dense size N (model width; depth 2, MLP/expert width 2x the model width) and the number of
experts E (top-1 routing, every block an MoE block, the `capacity` backend with capacity factor 2,
so few tokens are dropped and the compute does not grow with E), each trained for `--steps` steps
on one device. N counts the parameters a token passes
through, without embeddings (token and position tables) and routers: attention, norms and one
expert per block. L is the held-out validation loss (nats per byte) at the end. The fit is
log10 L = a log10 N + b log10 Ê + c log10 N log10 Ê + d (the paper's Eq. 1) with the paper's
S-BASE saturation (E_start, E_max), which E <= 8 cannot identify. Writes DIR/moe_scaling.json,
DIR/moe_scaling.md and DIR/moe_scaling.png (loss vs E per N, with the fitted law; `--name`
changes the file names). Runs finished
before `--time-cap` seconds are kept; the rest are skipped and listed.
"""

import argparse
import json
import math
import pathlib
import time

import jax
import numpy as np

from netlab import configlib
from netlab.moe import scaling_law
from netlab.train.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "moe" / "lm_tiny.py")


def dense_params(params, num_experts: int) -> int:
    """Parameters one token passes through: no embeddings, no router, one expert per block."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", k)) for k in path]
        if keys[-1] in ("embed", "pos") or "router" in keys:
            continue
        size = math.prod(leaf.shape)
        if keys[-1] in ("wi", "wo", "wg") and leaf.ndim == 3 and leaf.shape[0] == num_experts:
            size //= num_experts
        total += size
    return total


def run(width: int, experts: int, args) -> dict:
    over = {
        "model.width": width,
        "model.num_heads": max(2, width // 16),
        "model.depth": args.depth,
        "model.mlp_hidden": 2 * width,
        "model.moe.hidden": 2 * width,
        "model.moe.num_experts": experts,
        "model.moe.k": 1,
        "model.moe.backend": "capacity",
        "model.moe.capacity_factor": args.capacity_factor,
        "model.moe.eval_capacity_factor": args.capacity_factor,
        "mesh.data": 1,
        "mesh.expert": 1,
        "train.steps": args.steps,
        "train.batch_size": args.batch,
        "data.eval_windows": args.eval_windows,
        "optimizer.warmup_steps": min(50, args.steps // 5),
    }
    cfg = configlib.load(CONFIG, "cpu", overrides=over)
    t0 = time.time()
    trainer = Trainer(cfg, devices=jax.devices()[:1])
    state = trainer.init_state()
    n = dense_params(trainer.abstract_state.params, experts)
    train_loss = []
    for step in range(args.steps):
        state, metrics = trainer.train_step(state, trainer.global_batch(step))
        if step >= args.steps - 20:
            train_loss.append(float(metrics["cross_entropy"]))
    scalars, _ = trainer.evaluate(state, "/tmp")
    return {
        "width": width,
        "experts": experts,
        "dense_params": n,
        "total_params": trainer.num_params(),
        "valid_loss": scalars["valid_loss"],
        "train_loss_last20": float(np.mean(train_loss)),
        "seconds": time.time() - t0,
    }


def plot(runs, law, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    grid = np.geomspace(1, max(r["experts"] for r in runs), 50)
    for i, n in enumerate(sorted({r["dense_params"] for r in runs})):
        mine = sorted((r["experts"], r["valid_loss"]) for r in runs if r["dense_params"] == n)
        color = f"C{i}"
        ax.plot(*zip(*mine), "o", color=color, label=f"N = {n / 1e3:.0f}k")
        ax.plot(grid, law.loss(n, grid), "-", color=color, lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(
        sorted({r["experts"] for r in runs}), [str(e) for e in sorted({r["experts"] for r in runs})]
    )
    ax.set_xlabel("experts E")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("routed LM scaling law fit (Clark et al. 2022)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def markdown(runs, law, rms, args, skipped) -> str:
    lines = [
        "# Routed-LM scaling law on byte-level MoE LMs (bench/moe_scaling.py)",
        "",
        f"{len(runs)} runs: widths {args.widths}, experts {args.experts}, depth {args.depth}, "
        f"{args.steps} steps of batch {args.batch} x seq 64, top-1 routing, `capacity` backend "
        f"(capacity factor {args.capacity_factor}), "
        "one CPU device. N: parameters a token passes through (no embeddings, no router, one "
        "expert per block); L: held-out validation loss (nats/byte).",
        "",
        "| width | E | N (dense) | total params | valid loss | fitted | N̄ (effective) | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        fitted = law.loss(r["dense_params"], r["experts"])
        nbar = law.effective_params(r["dense_params"], r["experts"])
        lines.append(
            f"| {r['width']} | {r['experts']} | {r['dense_params']:,} | {r['total_params']:,} | "
            f"{r['valid_loss']:.4f} | {fitted:.4f} | {nbar:,.0f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Fit (log10, E_start = {law.e_start}, E_max = {law.e_max} fixed at the recalled "
        f"S-BASE values): a = {law.a:.4f}, b = {law.b:.4f}, c = {law.c:.4f}, d = {law.d:.4f}; "
        f"rms residual of log10 L = {rms:.4f}; N_cutoff = 10^(-b/c) = "
        + (f"{law.cutoff():.3g}" if law.c > 0 else "none (c <= 0)")
        + ".",
    ]
    if skipped:
        lines += ["", f"Skipped (time cap {args.time_cap} s): {skipped}."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="folder for NAME.{json,md,png}")
    ap.add_argument("--name", default="moe_scaling", help="file name stem of the results")
    ap.add_argument("--widths", default="16,32,64")
    ap.add_argument("--experts", default="1,2,4,8")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--capacity-factor", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-windows", type=int, default=128)
    ap.add_argument("--time-cap", type=float, default=3600.0, help="seconds for the whole grid")
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    experts = [int(e) for e in args.experts.split(",")]
    t0, runs, skipped = time.time(), [], []
    # the small widths at every E first, the largest width last: a grid cut by the time cap
    # still spans both N and E
    for w in widths:
        for e in experts:
            if time.time() - t0 > args.time_cap:
                skipped.append(f"width {w} x E {e}")
                continue
            runs.append(run(w, e, args))
            print(json.dumps(runs[-1]), flush=True)
    law, rms = scaling_law.fit(
        [r["dense_params"] for r in runs],
        [r["experts"] for r in runs],
        [r["valid_loss"] for r in runs],
    )
    result = {"runs": runs, "fit": vars(law), "rms_log10": rms, "skipped": skipped}
    result["args"] = vars(args)
    print(json.dumps(result["fit"]), "rms", rms)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{args.name}.md").write_text(markdown(runs, law, rms, args, skipped))
        try:
            plot(runs, law, out / f"{args.name}.png")
        except ImportError:
            print("matplotlib is not installed: wrote the table only")


if __name__ == "__main__":
    main()

"""Weight averaging of short digits-classifier runs: each run against DiWA (uniform soup), the
greedy soup, the exhaustive subset soup, DCWA and DCA, and the output ensemble.

    nice -n 19 python bench/soup_digits.py            # CPU, 2 cores: ~10 minutes
    nice -n 19 python bench/soup_digits.py --pretrain-steps 30 --steps 60 \
        --folder runs/soup_digits_short --out bench/results/soup_digits_short   # less converged

DiWA's protocol (Ramé et al. 2022, Sec. 4) on configs/classify_digits.py:cpu: one shared run
(`--pretrain-steps`), then M runs fine-tuned from it (`checkpoint.init_from`) with their own data
order (seed) and mildly different hyper-parameters (lr in {1e-3, 3e-3}, weight decay in {1e-4,
1e-6}, as DiWA draws them), `--steps` each. The held-out split of the task (360 images) is cut in
two: `val` (the first half) scores the greedy and exhaustive searches, `test` (the second half) is
reported for everything, so the searches do not select on the numbers in the table.
Methods (netlab/tools/soup.py): `uniform` = DiWA = DCWA (the mean of every component's
instances); `greedy` = Wortsman et al.'s Recipe 1; `subset` = the best of all 2^M - 1 subsets;
`dca` = Shen & Cremers' combinatorial prediction (mean class probabilities of 16 proposals, each
module drawn from a random run); `ensemble` = mean class probabilities of the M runs (M forward
passes, the reference weight averaging approximates with one).

Writes bench/results/soup_digits.json and .md; the runs go to runs/soup_digits/ (rerunning resumes
them).
"""

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from netlab import configlib, main  # noqa: E402
from netlab.classify.task import DigitsClassification  # noqa: E402
from netlab.tools import soup  # noqa: E402

CONFIG = "configs/classify_digits.py:cpu"
HPARAMS = [(3e-3, 1e-4), (1e-3, 1e-6), (3e-3, 1e-6), (1e-3, 1e-4), (2e-3, 1e-5)]


def train(workdir, steps, seed, lr, wd, init_from=""):
    args = ["--config", str(ROOT / CONFIG), "--workdir", str(workdir)]
    over = {
        "train.steps": steps,
        "train.eval_every": 0,
        "train.progress": "false",
        "checkpoint.every": steps,
        "seed": seed,
        "optimizer.lr": lr,
        "optimizer.weight_decay": wd,
        "optimizer.warmup_steps": min(50, steps // 4),
    }
    if init_from:
        over["checkpoint.init_from"] = str(init_from)
    rc = main.main(args + [f"--config.{k}={v}" for k, v in over.items()])
    if rc:
        raise SystemExit(f"training {workdir} failed with {rc}")


def main_():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--folder", default=str(ROOT / "runs" / "soup_digits"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soup_digits"))
    args = ap.parse_args()
    folder = pathlib.Path(args.folder)
    base = folder / "shared"
    train(base, args.pretrain_steps, 0, 3e-3, 1e-4)
    runs = []
    for k in range(args.runs):
        lr, wd = HPARAMS[k % len(HPARAMS)]
        runs.append(dict(workdir=folder / f"run{k}", seed=k + 1, lr=lr, weight_decay=wd))
        train(runs[-1]["workdir"], args.steps, k + 1, lr, wd, init_from=base)

    task = DigitsClassification(configlib.load(str(ROOT / CONFIG)))
    found = soup.check_same_model([str(r["workdir"]) for r in runs])
    abstract = soup.abstract_from_metadata(found[0][1])
    trees = [soup.read_params(str(r["workdir"]), abstract) for r in runs]
    x, y = task.data["test_x"], task.data["test_y"]
    half = len(y) // 2
    split = {"val": slice(0, half), "test": slice(half, None)}
    probs_fn = jax.jit(lambda p, x: jax.nn.softmax(task.model.apply({"params": p}, x)))

    def accuracy(probs, part):
        return float((np.asarray(probs).argmax(-1) == y)[split[part]].mean())

    def scores(params):
        probs = probs_fn(params, x)
        return {part: accuracy(probs, part) for part in split}

    rows = []
    for k, (r, t) in enumerate(zip(runs, trees)):
        rows.append(
            dict(method=f"run {k}", lr=r["lr"], weight_decay=r["weight_decay"], **scores(t))
        )
    val = lambda t: scores(t)["val"]  # noqa: E731
    rows.append(
        dict(method=f"uniform (DiWA = DCWA, {args.runs} runs)", **scores(soup.average(trees)))
    )
    g, kept, _ = soup.greedy(trees, val)
    rows.append(dict(method=f"greedy soup (val), runs {kept}", **scores(g)))
    c, kept, _ = soup.combinatorial(trees, val)
    rows.append(dict(method=f"best subset (val), runs {kept}", **scores(c)))
    dca = soup.dca_predict(probs_fn, trees, x, num=16, granularity="module", seed=0)
    rows.append(
        dict(method="DCA, 16 proposals (module-wise)", **{p: accuracy(dca, p) for p in split})
    )
    ens = np.mean([np.asarray(probs_fn(t, x)) for t in trees], axis=0)
    rows.append(
        dict(
            method=f"output ensemble ({args.runs} forwards)", **{p: accuracy(ens, p) for p in split}
        )
    )
    two = soup.average(trees[:2])
    rows.append(dict(method="uniform of runs 0, 1 (DiWA of two)", **scores(two)))
    shared = soup.read_params(str(base), abstract)
    rows.insert(0, dict(method=f"shared init ({args.pretrain_steps} steps)", **scores(shared)))

    command = "nice -n 19 python bench/soup_digits.py " + " ".join(sys.argv[1:])
    out = pathlib.Path(args.out)
    meta = dict(
        command=command.strip(),
        config=CONFIG,
        pretrain_steps=args.pretrain_steps,
        steps=args.steps,
        val_examples=half,
        test_examples=len(y) - half,
        jax=jax.__version__,
    )
    out.with_suffix(".json").write_text(json.dumps(dict(meta, rows=rows), indent=1))
    lines = [
        "# Weight averaging of digits-classifier runs (DiWA, soups, DCA / DCWA)",
        "",
        f"`{meta['command']}` (jax {meta['jax']}, CPU); {CONFIG}: a shared run of "
        f"{args.pretrain_steps} steps, then {args.runs} runs of {args.steps} steps from it (own "
        f"seed, lr, weight decay). Accuracy on the held-out split cut in two: val ({half} images) "
        f"selects the greedy / subset soups, test ({len(y) - half}) is reported. See "
        "bench/soup_digits.py.",
        "",
        "| method | val accuracy | test accuracy |",
        "|---|---|---|",
    ]
    for r in rows:
        hp = f" (lr {r['lr']:g}, wd {r['weight_decay']:g})" if "lr" in r else ""
        lines.append(f"| {r['method']}{hp} | {r['val']:.4f} | {r['test']:.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main_()

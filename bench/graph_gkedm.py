"""GKEDM attention distillation on Cora: teacher / student with KD / student without KD.

The task of ``configs/graph/gkedm.py:mode=distill`` (``netlab.graph.gkedm_task``) trains the
256-wide GKEDM teacher once (200 full-batch Adam steps); the 16-wide student then trains with the
config's schedule (Adam 0.01 constant, L2 5e-4 in the loss, dropout 0.5, 200 steps) through the
task's own ``loss_fn``, once with ``distill.kd_weight`` = 1 and once with 0 (the plain student),
from the same initialisation per seed. Reported: test accuracy at the best validation accuracy
(evaluated every 10 steps) and at the last step, mean ± std over seeds.

    NETLAB_DATA_DIR=... nice -n 19 .venv/bin/python bench/graph_gkedm.py [--seeds 3]
    # writes bench/results/graph_gkedm.json (the .md table is written by hand from it)
"""

import argparse
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from netlab import configlib  # noqa: E402
from netlab.graph import gkedm_task  # noqa: E402


def train_student(task, kd_weight, seed, steps, lr, eval_every):
    task.kd_weight = kd_weight
    params = nn.unbox(task.init_variables(jax.random.key(seed)))["params"]
    opt = optax.adam(lr)
    state = opt.init(params)
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))

    @jax.jit
    def step(p, s, k):
        (_, (aux, _)), g = jax.value_and_grad(task.loss_fn, has_aux=True)(p, {}, batch, k, True)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, aux

    best, last = None, None
    for i in range(1, steps + 1):
        params, state, aux = step(params, state, jax.random.fold_in(jax.random.key(seed), i))
        if i % eval_every == 0 or i == steps:
            sc, _ = task.evaluate(params, {}, i, None)
            last = {"step": i, "kd": float(aux["kd"]), **sc}
            if best is None or sc["val_accuracy"] > best["val_accuracy"]:
                best = last
    return {"best_val": best, "last": last}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data", default="cora")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--steps", type=int, default=0, help="> 0: student steps (smoke runs)")
    ap.add_argument("--teacher-steps", type=int, default=-1, help=">= 0: teacher steps")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "graph_gkedm"))
    args = ap.parse_args(argv)
    over = {"distill.teacher_steps": str(args.teacher_steps)} if args.teacher_steps >= 0 else {}
    cfg = configlib.load(f"configs/graph/gkedm.py:mode=distill,data={args.data}", overrides=over)
    steps = args.steps or cfg.train.steps
    t0 = time.time()
    task = gkedm_task.GKEDMDistillation(cfg)
    res = {
        "command": "nice -n 19 .venv/bin/python bench/graph_gkedm.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": cfg.to_dict(),
        "machine": platform.platform(),
        "jax": jax.__version__,
        "teacher": {**task.teacher_scalars, "seconds": round(time.time() - t0, 1)},
        "runs": {},
    }
    print("teacher", res["teacher"], flush=True)
    out = pathlib.Path(args.out + ".json")
    for label, kd in (("student_kd", cfg.distill.kd_weight), ("student_no_kd", 0.0)):
        runs = []
        for seed in range(args.seeds):
            t = time.time()
            r = train_student(task, kd, seed, steps, cfg.optimizer.lr, args.eval_every)
            r["seconds"] = round(time.time() - t, 1)
            print(label, seed, json.dumps(r), flush=True)
            runs.append(r)
        summary = {}
        for which in ("best_val", "last"):
            acc = np.array([q[which]["test_accuracy"] for q in runs]) * 100
            summary[f"test_{which}"] = [round(acc.mean(), 2), round(acc.std(), 2)]
        res["runs"][label] = {"kd_weight": kd, **summary, "runs": runs}
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(label, summary, flush=True)


if __name__ == "__main__":
    main()

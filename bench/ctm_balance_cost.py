"""Cost of CTM's adaptive DSM weight: one jitted loss + gradient step of the digits distillation
task (netlab/diffusion/distill_task.py) with `distill.dsm_balance=fixed` and `=adaptive`.

The adaptive weight differentiates the CTM and DSM losses a second time, with respect to the
output kernel only (`ctm.balance_weight`); this measures what that adds to a training step.

    python bench/ctm_balance_cost.py --teacher_workdir runs/adjoint_dit
    # writes bench/results/ctm_balance_cost.json
"""

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from netlab import configlib  # noqa: E402
from netlab.diffusion.distill_task import DistilledDigits  # noqa: E402


def step_seconds(teacher_workdir, mode, repeats):
    over = {"distill.teacher_workdir": teacher_workdir, "distill.dsm_balance": mode}
    cfg = configlib.load("configs/diffusion/digits_distill.py", "method=ctm", over)
    task = DistilledDigits(cfg)
    v = jax.jit(task.init_variables)(jax.random.key(0))
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))
    state = {"distill_target": v["distill_target"]}
    f = jax.jit(jax.value_and_grad(lambda p, k: task.loss_fn(p, state, batch, k, True)[0]))
    jax.block_until_ready(f(v["params"], jax.random.key(1)))  # compile
    t0 = time.perf_counter()
    for i in range(repeats):
        jax.block_until_ready(f(v["params"], jax.random.key(i)))
    return (time.perf_counter() - t0) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher_workdir", default="runs/adjoint_dit")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    out = {m: step_seconds(args.teacher_workdir, m, args.repeats) for m in ("fixed", "adaptive")}
    out["ratio"] = out["adaptive"] / out["fixed"]
    out.update(device=str(jax.devices()[0]), batch=64, repeats=args.repeats)
    print(json.dumps(out))
    path = ROOT / "bench" / "results" / "ctm_balance_cost.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

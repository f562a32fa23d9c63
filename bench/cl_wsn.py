"""WSN and SoftNet (Kang et al. 2022, 2023) on split digits, next to the hypernetwork method of
bench/cl_hypernetwork.py (von Oswald et al. 2020) on the same tasks and steps.

    nice -n 19 python bench/cl_wsn.py          # 4 runs, CPU: a few minutes

Runs configs/classify_continual_digits.py:method=wsn and :method=softnet
(netlab/classify/continual_wsn.py) for 2 tasks ({0..4}, {5..9}) and 5 tasks ({0,1}, ..., {8,9}),
300 steps each, evaluating at every task boundary, and reads the hypernetwork rows from
bench/results/cl_hypernetwork.json. Task-incremental: the task identity is given.

Writes bench/results/cl_wsn.json and .md; the runs go to runs/cl_wsn/.
"""

import json
import os
import pathlib
import shutil
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlab import main  # noqa: E402

CONFIG = "configs/classify_continual_digits.py"
STEPS_PER_TASK = 300


def run(workdir, method, num_tasks):
    shutil.rmtree(workdir, ignore_errors=True)
    steps = num_tasks * STEPS_PER_TASK
    over = {
        "data.num_tasks": num_tasks,
        "train.steps": steps,
        "train.eval_every": STEPS_PER_TASK,
        "checkpoint.every": steps,
        "train.progress": "false",
    }
    args = ["--config", f"{ROOT / CONFIG}:method={method}", "--workdir", str(workdir)]
    if main.main(args + [f"--config.{k}={v}" for k, v in over.items()]):
        raise SystemExit(f"{workdir} failed")
    evals = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "eval/test_accuracy" in r:
            evals[r["step"] // STEPS_PER_TASK] = {
                k.split("/")[1]: v for k, v in r.items() if k.startswith("eval/acc_task")
            }
    return evals  # {tasks learned: {acc_task<t>: accuracy}}


def main_():
    rows = []
    for num_tasks in (2, 5):
        for method in ("wsn", "softnet"):
            evals = run(ROOT / "runs" / "cl_wsn" / f"{method}_tasks{num_tasks}", method, num_tasks)
            final = evals[num_tasks]
            rows.append(
                dict(
                    method=method,
                    num_tasks=num_tasks,
                    task0_after_task0=evals[1]["acc_task0"],
                    task0_after_task1=evals[2]["acc_task0"],
                    final=final,
                    final_mean=sum(final.values()) / len(final),
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    hnet = json.loads((ROOT / "bench" / "results" / "cl_hypernetwork.json").read_text())["rows"]
    for r in hnet:
        rows.append(dict(r, method=f"hypernet (beta {r['beta']})"))
    rows.sort(key=lambda r: r["num_tasks"])
    out = ROOT / "bench" / "results" / "cl_wsn"
    command = "nice -n 19 python bench/cl_wsn.py"
    out.with_suffix(".json").write_text(
        json.dumps(dict(command=command, config=CONFIG, rows=rows), indent=1)
    )
    lines = [
        "# Continual learning on split digits: WSN / SoftNet masks vs a hypernetwork",
        "",
        f"`{command}`; {CONFIG}:method=wsn|softnet (shared MLP 64-32-classes, capacity c = 0.5 "
        f"per kernel, used weights frozen), {STEPS_PER_TASK} steps per task, task identity "
        "given; the hypernetwork rows are bench/results/cl_hypernetwork.md's (same tasks, steps "
        "and target MLP). Test accuracy of task 1 right after it is learned and after task 2; "
        "then every task's accuracy after the last task, and their mean. WSN / SoftNet evaluate "
        "each task with its hard top-c mask, which no later task changes (forget-free: the "
        "first two columns are equal by construction).",
        "",
        "| tasks | method | task 1 after task 1 | task 1 after task 2 | every task after the last "
        "| mean |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        each = " ".join(f"{v:.3f}" for v in r["final"].values())
        lines.append(
            f"| {r['num_tasks']} | {r['method']} | {r['task0_after_task0']:.3f} | "
            f"{r['task0_after_task1']:.3f} | {each} | {r['final_mean']:.3f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main_()

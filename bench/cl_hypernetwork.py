"""Forgetting on split digits with a task-conditioned hypernetwork (von Oswald et al. 2020), with
and without its output regulariser.

    nice -n 19 python bench/cl_hypernetwork.py          # 4 runs, CPU: a few minutes

Runs configs/classify_continual_digits.py:cpu (netlab/classify/continual.py) for 2 tasks
({0..4}, {5..9}; 300 steps each) and 5 tasks ({0,1}, ..., {8,9}; 300 steps each), with
`model.beta` = 0.01 (the regulariser) and 0 (plain sequential training of the hypernetwork), and
reads every task's test accuracy after each task from the runs' metrics (evaluation at every task
boundary: `train.eval_every` = steps per task). Task-incremental: the task identity is given, each
task is a 5-way (2 tasks) or 2-way (5 tasks) problem.

Writes bench/results/cl_hypernetwork.json and .md; the runs go to runs/cl_hypernetwork/.
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

CONFIG = "configs/classify_continual_digits.py:cpu"
STEPS_PER_TASK = 300


def run(workdir, num_tasks, beta):
    shutil.rmtree(workdir, ignore_errors=True)
    steps = num_tasks * STEPS_PER_TASK
    over = {
        "data.num_tasks": num_tasks,
        "model.beta": beta,
        "train.steps": steps,
        "train.eval_every": STEPS_PER_TASK,
        "checkpoint.every": steps,
        "train.progress": "false",
    }
    args = ["--config", str(ROOT / CONFIG), "--workdir", str(workdir)]
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
    folder = ROOT / "runs" / "cl_hypernetwork"
    rows = []
    for num_tasks in (2, 5):
        for beta in (0.01, 0.0):
            evals = run(folder / f"tasks{num_tasks}_beta{beta}", num_tasks, beta)
            final = evals[num_tasks]
            rows.append(
                dict(
                    num_tasks=num_tasks,
                    beta=beta,
                    task0_after_task0=evals[1]["acc_task0"],
                    task0_after_task1=evals[2]["acc_task0"],
                    final=final,
                    final_mean=sum(final.values()) / len(final),
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "bench" / "results" / "cl_hypernetwork"
    command = "nice -n 19 python bench/cl_hypernetwork.py"
    out.with_suffix(".json").write_text(
        json.dumps(dict(command=command, config=CONFIG, rows=rows), indent=1)
    )
    lines = [
        "# Continual learning with a hypernetwork on split digits (von Oswald et al. 2020)",
        "",
        f"`{command}`; {CONFIG}, {STEPS_PER_TASK} steps per task, task identity given. Test "
        "accuracy of task 1 right after it is learned and after task 2; then every task's "
        "accuracy after the last task, and their mean. beta = 0: the same hypernetwork trained "
        "on the tasks in sequence without the output regulariser.",
        "",
        "| tasks | beta | task 1 after task 1 | task 1 after task 2 | every task after the last "
        "| mean |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        each = " ".join(f"{v:.3f}" for v in r["final"].values())
        lines.append(
            f"| {r['num_tasks']} | {r['beta']} | {r['task0_after_task0']:.3f} | "
            f"{r['task0_after_task1']:.3f} | {each} | {r['final_mean']:.3f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main_()

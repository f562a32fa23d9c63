"""Sampler comparison on a trained `diffusion.digits_bridge` run (bench/results/digits_bridge.md):
DBIM (eta 0 and 1, orders 1-3) and DDBM's hybrid sampler at several step counts, translating the
whole digits test split; digits FD of the translations against the test digits and MSE per pixel
to the paired targets. Raw parameters of the run's last checkpoint (the run's own evaluation
uses its EMA).

    nice -n 19 python bench/digits_bridge_samplers.py --workdir runs/digits_bridge \
        --set model.width=64 model.depth=2
"""

import argparse
import json

import flax.linen as nn
import jax
import numpy as np

from netlab import configlib
from netlab.checkpoint import manager
from netlab.diffusion import metrics
from netlab.diffusion.bridge_task import DigitsBridge

CASES = [  # sampler, eta, order, steps
    ("dbim", 0.0, 1, 5),
    ("dbim", 0.0, 1, 10),
    ("dbim", 0.0, 1, 20),
    ("dbim", 0.0, 2, 10),
    ("dbim", 0.0, 3, 10),
    ("dbim", 1.0, 1, 10),
    ("ddbm", 0.0, 1, 10),
    ("ddbm", 0.0, 1, 20),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/digits_bridge")
    ap.add_argument("--set", nargs="*", default=[], help="the run's config overrides key=value")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    base = dict(s.split("=", 1) for s in args.set)
    feats = metrics.DigitsFeatures(args.workdir)
    rows = []
    for sampler, eta, order, steps in CASES:
        over = dict(base, **{"bridge.sampler": sampler, "bridge.eta": str(eta)})
        over["bridge.order"] = str(order)
        task = DigitsBridge(configlib.load("configs/diffusion/digits_bridge.py:cpu", None, over))
        abstract = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
        params, _ = manager.restore_params(args.workdir, abstract)
        target, edges = task.data["test_x"], task.edges["test"]
        out = task.translate(params, edges, steps=steps)
        row = dict(sampler=sampler, eta=eta, order=order, steps=steps)
        row["nfe"] = steps + 2 if sampler == "dbim" else 3 * steps
        row["fd"] = feats.frechet_distance(out, target)
        row["mse"] = float(np.mean((out - target) ** 2))
        print(row, flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

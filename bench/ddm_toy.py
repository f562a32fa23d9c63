"""Decentralized Diffusion Models vs one model on the 2-D toy mixture (8 modes on a ring).

    nice -n 19 python bench/ddm_toy.py > runs/ddm_toy.log 2>&1 &

Trains, with the same steps, global batch and optimizer (so the same training FLOPs up to the
small router): the single MLP denoiser of configs/diffusion/toy2d.py, and the DDM of
configs/diffusion/toy2d_ddm.py with K = 4 experts of the same width on k-means partitions and on
random shards (the paper's ablation). Each expert sees batch/K rows per step. Samples (EMA
parameters, DPM-Solver++(2M), 25 steps, 4000 samples) are compared with fresh draws of the
mixture by the sliced 1-Wasserstein distance (`metrics.sliced_wasserstein`) and the energy
distance E|X-Y| - (E|X-X'| + E|Y-Y'|)/2; the DDM is sampled with the full ensemble and with top-1
and top-2 routing. A reference row compares two independent draws of the data (the metric floor
at this sample size). Writes bench/results/ddm_toy.{json,md}.
"""

import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from netlab import configlib  # noqa: E402
from netlab.diffusion import metrics  # noqa: E402
from netlab.train.trainer import Trainer  # noqa: E402

STEPS, N, SEEDS = 2000, 4000, (0, 1)


def energy_distance(a, b, m=2000):
    a, b = np.asarray(a, np.float64)[:m], np.asarray(b, np.float64)[:m]

    def mean_dist(x, y):
        return np.mean(np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)))

    return float(mean_dist(a, b) - 0.5 * (mean_dist(a, a) + mean_dist(b, b)))


def train(config, overrides, seed):
    cfg = configlib.load(config, overrides=dict(overrides, seed=str(seed)))
    trainer = Trainer(cfg, devices=jax.devices()[:1])
    state = trainer.init_state()
    t0 = time.time()
    for step in range(STEPS):
        state, m = trainer.train_step(state, trainer.global_batch(step))
    jax.block_until_ready(state.params)
    print(
        f"{config} {overrides} seed {seed}: {time.time() - t0:.0f} s, last loss "
        f"{float(m['loss']):.4f}",
        flush=True,
    )
    return trainer.task, trainer.eval_params(state), {k: float(v) for k, v in m.items()}


def scores(samples, real):
    return {
        "sliced_wasserstein": metrics.sliced_wasserstein(samples, real),
        "energy_distance": energy_distance(samples, real),
    }


def main():
    rows = []
    for seed in SEEDS:
        real = np.asarray(_mixture().sample(jax.random.key(1000 + seed), N))
        floor = np.asarray(_mixture().sample(jax.random.key(2000 + seed), N))
        rows.append(dict(model="data vs data (floor)", seed=seed, **scores(floor, real)))
        task, params, _ = train("configs/diffusion/toy2d.py:cpu", {"train.steps": str(STEPS)}, seed)
        rows.append(dict(model="single MLP", seed=seed, **scores(task.sample(params, N), real)))
        for partition in ("kmeans", "random"):
            over = {"train.steps": str(STEPS), "ddm.partition": partition}
            task, params, m = train("configs/diffusion/toy2d_ddm.py:cpu", over, seed)
            for top_k in (0, 1, 2):
                name = f"DDM K=4 {partition}, " + ("full ensemble" if not top_k else f"top-{top_k}")
                out = task.sample(params, N, top_k=top_k)
                rows.append(
                    dict(model=name, seed=seed, router_acc=m["router_acc"], **scores(out, real))
                )
    out = ROOT / "bench" / "results"
    (out / "ddm_toy.json").write_text(json.dumps(dict(steps=STEPS, samples=N, rows=rows), indent=1))
    names = list(dict.fromkeys(r["model"] for r in rows))
    lines = [
        "# DDM vs a single model on toy2d (bench/ddm_toy.py)",
        "",
        f"{STEPS} steps, batch 256, same optimizer; {N} samples, DPM-Solver++(2M) 25 steps; "
        f"mean over seeds {SEEDS}. Lower is better.",
        "",
        "| model | sliced W1 | energy distance |",
        "|---|---|---|",
    ]
    for name in names:
        sel = [r for r in rows if r["model"] == name]
        sw = np.mean([r["sliced_wasserstein"] for r in sel])
        ed = np.mean([r["energy_distance"] for r in sel])
        lines.append(f"| {name} | {sw:.4f} | {ed:.4f} |")
    (out / "ddm_toy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _mixture():
    from netlab.diffusion.oracle import GaussianMixture

    ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    return GaussianMixture(
        np.stack([2 * np.cos(ang), 2 * np.sin(ang)], 1), np.full((8, 2), 0.15), np.full(8, 1 / 8)
    )


if __name__ == "__main__":
    main()

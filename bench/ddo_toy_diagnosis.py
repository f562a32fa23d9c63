"""Why DDO fine-tuning makes the toy mixture model worse (bench/results/toy2d_gan.md):
gradient statistics at the reference and fine-tuning runs that isolate the causes.

From a trained `configs/diffusion/toy2d.py:cpu` checkpoint (theta = ref, the first DDO step), K
independent batches (data rows, reference samples, one (log-SNR, eps) per row: exactly
`GANToy2D.ddo_loss`) give gradients g_k. Reported per loss: the signal-to-noise ratio
|mean g| / sqrt(mean |g_k - mean g|^2) of one batch's gradient, next to the toy's own denoising
loss at the same parameters. Then `--steps` Adam steps (constant lr) of DDO with the
gradient of one batch (what the task does) and with the mean over each of `--averages` batches (that
many times larger batches), the sliced Wasserstein distance to the mixture every
`--eval_every` steps (`--set gan.alpha=0` keeps only the data term: ELBO-weighted likelihood
fine-tuning). Writes bench/results/ddo_toy_diagnosis.json (numbers and reading:
bench/results/toy2d_gan.md).

    nice -n 19 python bench/ddo_toy_diagnosis.py --workdir runs/toy2d_pre
"""

import argparse
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab import configlib
from netlab.checkpoint import manager
from netlab.diffusion import metrics
from netlab.diffusion.gan_task import GANToy2D
from netlab.diffusion.task import Toy2D

RESULTS = pathlib.Path(__file__).parent / "results"


def flat(tree):
    return jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(tree)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/toy2d_pre")
    ap.add_argument("--batches", type=int, default=32)
    ap.add_argument("--averages", type=int, nargs="+", default=[1, 8], help="batches per step")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval_every", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--snr_only", action="store_true", help="print the SNRs, skip the runs")
    ap.add_argument("--out", default=str(RESULTS / "ddo_toy_diagnosis.json"))
    args = ap.parse_args()
    over = {"gan.pretrain_steps": "0", **dict(s.split("=", 1) for s in args.set)}
    task = GANToy2D(configlib.load("configs/diffusion/toy2d_gan.py", "method=ddo", over))
    abstract = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
    ref, _ = manager.restore_params(args.workdir, abstract)
    real = np.asarray(task.mixture.sample(jax.random.key(12345), 2000))

    def batch(i):
        return jnp.asarray(task.train_batch(10_000 + i)["x"])

    @jax.jit
    def grads(params, x, key):
        g_ddo = jax.grad(lambda p: task.ddo_loss(p, ref, x, key)[0])(params)
        g_den = jax.grad(lambda p: Toy2D.loss_fn(task, p, {}, {"x": x}, key, True)[0])(params)
        return flat(g_ddo), flat(g_den)

    out = {"args": vars(args), "snr": {}}
    g = [grads(ref, batch(i), jax.random.key(i)) for i in range(args.batches)]
    for j, name in enumerate(("ddo", "denoising")):
        gs = np.stack([np.asarray(v[j], np.float64) for v in g])
        mean = gs.mean(0)
        noise = np.sqrt(np.mean(np.sum((gs - mean) ** 2, -1)))
        out["snr"][name] = {"mean_norm": float(np.linalg.norm(mean)), "noise": float(noise)}
        out["snr"][name]["snr_one_batch"] = float(np.linalg.norm(mean) / noise)
        print(name, out["snr"][name])

    if args.snr_only:
        return
    tx = optax.adam(args.lr)

    @jax.jit
    def step(params, opt, xs, keys):
        def one(x, k):
            return jax.grad(lambda p: task.ddo_loss(p, ref, x, k)[0])(params)

        gr = jax.tree.map(lambda v: v.mean(0), jax.lax.map(lambda a: one(*a), (xs, keys)))
        upd, opt = tx.update(gr, opt, params)
        return optax.apply_updates(params, upd), opt

    out["sliced_wasserstein_reference"] = metrics.sliced_wasserstein(task.sample(ref, 2000), real)
    print(f"reference: sliced W {out['sliced_wasserstein_reference']:.3f}")
    for avg in args.averages:
        params, opt, curve = ref, tx.init(ref), []
        for s in range(1, args.steps + 1):
            idx = [s * max(args.averages) + i for i in range(avg)]
            xs = jnp.stack([batch(i) for i in idx])
            keys = jnp.stack([jax.random.key(100_000 + i) for i in idx])
            params, opt = step(params, opt, xs, keys)
            if s % args.eval_every == 0:
                sw = metrics.sliced_wasserstein(task.sample(params, 2000), real)
                curve.append((s, sw))
                print(f"average {avg} step {s}: sliced W {sw:.3f}")
        out[f"sliced_wasserstein_average_{avg}"] = curve
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""AdjointDPM guided optimisation (Pan et al. 2024, netlab/diffusion/adjoint_dpm.py): tune the
class embeddings of a trained digits DiT so that its probability-flow ODE samples score higher
under the digits classifier, with gradients by the continuous adjoint (memory constant in the
number of solver steps).

For class c the DiT's label table row e_c is the optimised parameter theta; a fixed batch of
initial noises x_T per class is carried by the PF-ODE (`adjoint_dpm.sample`, `--method` with
`--steps` equal steps in u = -logsnr / 2 from log-SNR `--logsnr_from` to `--logsnr_to`, no
classifier-free guidance; Heun with 8 such steps from the grid's -15 diverges) to
x0(theta), and Adam minimises the mean of -log p(c | x0) under the digits Frechet-distance
classifier (the ConvNet of `netlab.diffusion.metrics.DigitsFeatures`, trained once on the
digits training split). Reported before and after: the mean log p(c | x0) and accuracy on the
optimisation noises and on fresh held-out noises (the embedding is shared by every sample of
its class, so held-out gains are real gains, not memorised noises); also the digits FD of the
held-out samples. Writes bench/results/adjoint_guidance.{json,png} (the picture: one column
per class, held-out samples before | after).

The checkpoint is a `configs/diffusion/digits_dit.py:cpu` workdir (`--config` names another
config); its raw parameters are used, so train it with `--config.optimizer.ema_stds="()"` to
make them the evaluated ones:

    nice -n 19 python -m netlab.main --config configs/diffusion/digits_dit.py:cpu \\
        --workdir runs/adjoint_dit --config.optimizer.ema_stds="()" --config.train.progress=false
    nice -n 19 python bench/adjoint_guidance.py --workdir runs/adjoint_dit
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
from netlab.diffusion import adjoint_dpm, metrics
from netlab.diffusion.task import DigitsDiffusion, image_grid

RESULTS = pathlib.Path(__file__).parent / "results"


def class_denoiser(task, params):
    """denoise(x, logsnr, table) -> x0_hat with the DiT's label rows 0..9 replaced by `table`
    (10, width); rows of x are ordered class 0..9 repeating (labels = arange(N) % 10)."""

    def denoise(x, logsnr, table):
        full = params["label_embed"].at[:10].set(table.astype(params["label_embed"].dtype))
        p = dict(params, label_embed=full)
        n = x.shape[0]
        lam = jnp.full((n,), logsnr, x.dtype)
        return task.model_output(p, x, lam, jnp.arange(n) % 10)[0]

    return denoise


def classifier_log_prob(features, x):
    """log p(class = row % 10 | x) under the digits FD ConvNet, per row."""
    logits = features.net.apply({"params": features.params}, x.astype(jnp.float32))
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, (jnp.arange(x.shape[0]) % 10)[:, None], 1)[:, 0]


def optimise(task, params, features, x_train, grid_ends, steps, method, iters, lr):
    """Adam on the label table; -> (table before, table after, log of scores per iteration)."""
    denoise = class_denoiser(task, params)
    l_from, l_to = grid_ends

    def sample(table, x_T, gradient):
        return adjoint_dpm.sample(denoise, x_T, table, l_from, l_to, steps, method, gradient)

    def loss(table, x_T):
        return -jnp.mean(classifier_log_prob(features, sample(table, x_T, "adjoint")))

    tx = optax.adam(lr)

    @jax.jit
    def step(table, opt):
        value, grad = jax.value_and_grad(loss)(table, x_train)
        upd, opt = tx.update(grad, opt, table)
        return optax.apply_updates(table, upd), opt, value

    table0 = params["label_embed"][:10]
    table, opt, log = table0, tx.init(table0), []
    for i in range(iters):
        table, opt, value = step(table, opt)
        log.append(-float(value))
        print(f"iter {i}: mean log p(c | x0) on the optimisation noises {-float(value):.4f}")
    return table0, table, jax.jit(lambda t, x: sample(t, x, "backprop")), log


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/adjoint_dit")
    ap.add_argument("--config", default="configs/diffusion/digits_dit.py:cpu", help="its config")
    ap.add_argument("--set", nargs="*", default=[], help="its config overrides key=value")
    ap.add_argument("--per_class", type=int, default=8, help="optimisation noises per class")
    ap.add_argument("--held_per_class", type=int, default=20)
    ap.add_argument("--steps", type=int, default=16, help="PF-ODE solver steps")
    ap.add_argument("--method", default="rk4")
    ap.add_argument("--logsnr_from", type=float, default=-10.0)
    ap.add_argument("--logsnr_to", type=float, default=8.0)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--out", default=str(RESULTS / "adjoint_guidance"))
    args = ap.parse_args()

    cfg = configlib.load(args.config, None, dict(s.split("=", 1) for s in args.set))
    task = DigitsDiffusion(cfg)
    abstract = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
    params, ckpt_step = manager.restore_params(args.workdir, abstract)
    features = metrics.DigitsFeatures(args.workdir)
    ends = (args.logsnr_from, args.logsnr_to)
    k_train, k_held = jax.random.split(jax.random.key(0))
    x_train = jax.random.normal(k_train, (10 * args.per_class, 8, 8, 1))
    x_held = jax.random.normal(k_held, (10 * args.held_per_class, 8, 8, 1))
    t0, t1, sample, log = optimise(
        task, params, features, x_train, ends, args.steps, args.method, args.iters, args.lr
    )
    real = task.data["test_x"]
    out = {"checkpoint_step": ckpt_step, "args": vars(args), "grid_ends": ends, "log": log}
    images = {}
    for name, table in (("before", t0), ("after", t1)):
        for split, x_T in (("optimised_noises", x_train), ("held_out_noises", x_held)):
            x0 = sample(table, x_T)
            lp = np.asarray(classifier_log_prob(features, x0))
            logits = features.net.apply({"params": features.params}, x0.astype(jnp.float32))
            acc = float(np.mean(np.asarray(logits).argmax(-1) == np.arange(len(x0)) % 10))
            out[f"{name}/{split}/mean_log_p"] = float(lp.mean())
            out[f"{name}/{split}/accuracy"] = acc
            if split == "held_out_noises":
                out[f"{name}/{split}/digits_fd"] = features.frechet_distance(np.asarray(x0), real)
                images[name] = np.asarray(x0)[:100]
    out["embedding_change_rel"] = float(jnp.linalg.norm(t1 - t0) / jnp.linalg.norm(t0))
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    pic = np.concatenate([image_grid(images["before"], 10), image_grid(images["after"], 10)], 1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path.with_suffix(".png"), pic, cmap="gray", vmin=0, vmax=255)
    print(json.dumps({k: v for k, v in out.items() if k != "log"}, indent=1))


if __name__ == "__main__":
    main()

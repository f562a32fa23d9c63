"""Spline-based early-bird pruning of a digits MLP (You, Balestriero et al. 2022, TMLR, "Max-Affine
Spline Insights Into Deep Network Pruning") against random pruning at the same kept fraction.

    nice -n 19 python bench/spline_pruning_digits.py      # CPU, 2 shared cores: ~3 minutes

Protocol, per seed (init and data order; 3 seeds): a 64-256-256-10 ReLU MLP trained with optax
Adam on scikit-learn digits (the classify task's split, netlab.data.digits: 1437 train / 360
held-out images) for `--epochs` epochs. After every epoch (and at init) each hidden layer's unit
codes (netlab.train.spline_pruning.unit_codes) are recorded on a fixed probe batch (`--probe`
training images, the same for every seed). The early-bird epoch is `early_bird` on the two hidden
layers' codes stacked (`--eps`, `--patience`): the first epoch whose partition of the probe batch
moved by at most eps for `patience` consecutive epochs. At that epoch's weights, each hidden
layer's keep mask is `redundant_units` on the dense network's pre-activations over the probe batch,
at each of `--thresholds`; the layers are then shrunk in order with `drop_units`: the dropped units
(dead, always-on or duplicates of a kept unit's code) are replaced by their mean activation on the
probe batch, folded into the next layer's bias (exact for dead units; for always-on and duplicate
units only the mean is kept). The smaller network is fine-tuned for `--finetune-epochs` epochs
(fresh Adam). Random pruning keeps the same number of units per layer, drawn uniformly (seeded),
with the same fold and fine-tuning. Dense accuracy is after all `--epochs`; "at prune" is the
pruned network before fine-tuning.

Writes bench/results/spline_pruning_digits.{json,md,png} (the plot: code distance between
consecutive epochs per layer, every seed, early-bird epochs marked).
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from tqdm import tqdm  # noqa: E402

from netlab.data import digits  # noqa: E402
from netlab.train import spline_pruning as sp  # noqa: E402

WIDTHS = (64, 256, 256, 10)


def init(key, widths=WIDTHS):
    init_w = jax.nn.initializers.he_normal()
    keys = jax.random.split(key, len(widths) - 1)
    return [
        (init_w(k, (a, b), jnp.float32), jnp.zeros((b,), jnp.float32))
        for k, a, b in zip(keys, widths[:-1], widths[1:])
    ]


def forward(params, x):
    """-> logits, [pre-activations of each hidden layer]."""
    pres = []
    for w, b in params[:-1]:
        pres.append(x @ w + b)
        x = jax.nn.relu(pres[-1])
    w, b = params[-1]
    return x @ w + b, pres


def make_epoch(opt):
    def loss(params, x, y):
        logits, _ = forward(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def epoch(params, state, xb, yb):  # xb (steps, batch, 64): one scan over the epoch
        def step(carry, batch):
            params, state = carry
            grads = jax.grad(loss)(params, *batch)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, state), (xb, yb))[0]

    return epoch


@jax.jit
def accuracy(params, x, y):
    return jnp.mean(forward(params, x)[0].argmax(-1) == y)


def train(params, data, epochs, seed, lr, batch, on_epoch=None):
    opt = optax.adam(lr)
    state, epoch = opt.init(params), make_epoch(opt)
    x, y = data["train_x"], data["train_y"]
    steps = len(y) // batch
    rng = np.random.default_rng(seed)
    for e in range(1, epochs + 1):
        idx = rng.permutation(len(y))[: steps * batch].reshape(steps, batch)
        params, state = epoch(params, state, x[idx], y[idx])
        if on_epoch is not None:
            on_epoch(e, params)
    return params


def prune(params, probe_x, keeps):
    """Shrink every hidden layer to its keep mask, in order (drop_units on the current network)."""
    params = [(np.asarray(w), np.asarray(b)) for w, b in params]
    for layer, keep in enumerate(keeps):
        act = np.maximum(np.asarray(forward(params, probe_x)[1][layer]), 0)
        w, b, wn, bn = sp.drop_units(*params[layer], *params[layer + 1], keep, act)
        params[layer], params[layer + 1] = (w, b), (wn, bn)
    return [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]


def codes_of(params, probe_x):
    return [sp.unit_codes(p) for p in forward(params, probe_x)[1]]


def run_seed(seed, data, probe_x, args, bar):
    test = (data["test_x"], data["test_y"])
    params = init(jax.random.PRNGKey(seed))
    history = [codes_of(params, probe_x)]
    snapshots = {0: params}

    def record(e, p):
        history.append(codes_of(p, probe_x))
        snapshots[e] = p

    dense = train(params, data, args.epochs, seed, args.lr, args.batch, record)
    bar.update()
    layers = len(history[0])
    dist = [
        [sp.code_distance(history[e - 1][k], history[e][k]) for e in range(1, len(history))]
        for k in range(layers)
    ]
    stacked = [np.concatenate(c) for c in history]
    eb = sp.early_bird(stacked, args.eps, args.patience)
    out = dict(
        seed=seed,
        dense_acc=float(accuracy(dense, *test)),
        code_distance=dist,
        early_bird=eb,
    )
    if eb is None:  # never stable: prune at the last epoch, and say so
        eb_used = args.epochs
    else:
        eb_used = eb
    out["prune_epoch"] = eb_used
    at_eb = snapshots[eb_used]
    out["acc_at_prune_epoch"] = float(accuracy(at_eb, *test))
    pres = [np.asarray(p) for p in forward(at_eb, probe_x)[1]]
    rng = np.random.default_rng([seed, 1])
    rows = []
    for t in args.thresholds:
        keeps = [sp.redundant_units(p, threshold=t) for p in pres]
        rand = []
        for keep in keeps:
            r = np.zeros(len(keep), bool)
            r[rng.choice(len(keep), int(keep.sum()), replace=False)] = True
            rand.append(r)
        row = dict(threshold=t, kept=[int(k.sum()) for k in keeps])
        for name, masks in (("spline", keeps), ("random", rand)):
            small = prune(at_eb, probe_x, masks)
            row[f"{name}_acc_at_prune"] = float(accuracy(small, *test))
            tuned = train(small, data, args.finetune_epochs, seed + 100, args.lr, args.batch)
            row[f"{name}_acc"] = float(accuracy(tuned, *test))
            bar.update()
        rows.append(row)
    out["thresholds"] = rows
    return out


def mean_std(v):
    return f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"


def report(results, args, command, out):
    units = sum(WIDTHS[1:-1])
    meta = dict(
        command=command,
        widths=WIDTHS,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        batch=args.batch,
        probe=args.probe,
        eps=args.eps,
        patience=args.patience,
        jax=jax.__version__,
    )
    out.with_suffix(".json").write_text(json.dumps(dict(meta, seeds=results), indent=1))
    ebs = [r["early_bird"] for r in results]
    lines = [
        "# Spline-based early-bird pruning of a digits MLP (You, Balestriero et al. 2022)",
        "",
        f"`{command}` (jax {jax.__version__}, CPU). MLP {'-'.join(map(str, WIDTHS))} ReLU, Adam "
        f"lr {args.lr:g}, batch {args.batch}, {args.epochs} dense epochs; unit codes on a fixed "
        f"probe batch of {args.probe} training images; early bird: code distance between "
        f"consecutive epochs <= {args.eps:g} for {args.patience} epochs (both hidden layers "
        f"stacked). Pruned at the early-bird epoch (dropped units replaced by their probe-batch "
        f"mean activation, folded into the next bias), then fine-tuned {args.finetune_epochs} "
        f"epochs; random pruning keeps the same number of units per layer. Held-out accuracy "
        f"(360 images), mean ± std over {len(results)} seeds. See bench/spline_pruning_digits.py.",
        "",
        f"Dense accuracy: {mean_std([r['dense_acc'] for r in results])} %; early-bird epochs: "
        f"{ebs} (pruned at {[r['prune_epoch'] for r in results]}; dense accuracy there: "
        f"{mean_std([r['acc_at_prune_epoch'] for r in results])} %).",
        "",
        "| threshold | kept units (of 256 + 256) | kept fraction | spline at prune | "
        "spline fine-tuned | random at prune | random fine-tuned |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, t in enumerate(args.thresholds):
        rows = [r["thresholds"][i] for r in results]
        kept = np.array([r["kept"] for r in rows])
        frac = kept.sum(1) / units
        lines.append(
            f"| {t:g} | {' / '.join(f'{m:.0f}' for m in kept.mean(0))} | "
            f"{frac.mean():.3f} ± {frac.std():.3f} | "
            + " | ".join(
                mean_std([r[k] for r in rows])
                for k in ("spline_acc_at_prune", "spline_acc", "random_acc_at_prune", "random_acc")
            )
            + " |"
        )
    lines += ["", "![code distance per epoch](spline_pruning_digits.png)", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    plot(results, out.with_suffix(".png"))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    colours = ("C0", "C1")
    for r in results:
        for k, d in enumerate(r["code_distance"]):
            label = f"hidden layer {k + 1}" if r is results[0] else None
            ax.plot(range(1, len(d) + 1), d, color=colours[k], alpha=0.7, label=label)
        if r["early_bird"] is not None:
            ax.axvline(r["early_bird"], color="grey", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("code distance to previous epoch")
    ax.set_title("unit codes on the probe batch (dashed: early-bird epochs)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--probe", type=int, default=512)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "spline_pruning_digits"))
    args = ap.parse_args()
    data = digits.load()
    data = {k: (v.reshape(len(v), -1) if k.endswith("_x") else v) for k, v in data.items()}
    probe = np.random.default_rng(0).choice(len(data["train_y"]), args.probe, replace=False)
    probe_x = jnp.asarray(data["train_x"][np.sort(probe)])
    results = []
    with tqdm(total=args.seeds * (1 + 2 * len(args.thresholds)), desc="runs") as bar:
        for seed in range(args.seeds):
            results.append(run_seed(seed, data, probe_x, args, bar))
    command = ("nice -n 19 python bench/spline_pruning_digits.py " + " ".join(sys.argv[1:])).strip()
    report(results, args, command, pathlib.Path(args.out))


if __name__ == "__main__":
    main()

"""Graph Metanetwork (Lim et al. 2024, `netlab/nn/graph_metanetwork.py`) predicting the test
accuracy of small digits classifiers from their weights.

Zoo: ``--zoo`` MLPs 64-16-10 (tanh) on scikit-learn digits, each with its own init seed, learning
rate (log-uniform 1e-3..1e-1) and number of SGD steps (0..``--max-steps``, minibatch 128),
trained together with `jax.vmap`; target: the test accuracy. The first ``--train`` networks train
the GMN (MSE, Adam with cosine decay, 32 networks per step), the rest are held out. Reported on
the held-out networks: R^2, Kendall's tau, the mean absolute error, and a baseline that regresses
the accuracy on simple weight statistics (mean, std and norm of each layer's weights and
biases; ridge). ``perm_gap``: the largest change of the GMN's prediction when each held-out
network's hidden neurons are randomly permuted (0 up to rounding: the invariance).

    nice -n 19 .venv/bin/python bench/metanet_zoo.py
    # writes bench/results/metanet_zoo.json and .md
"""

import argparse
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from netlab.data import digits  # noqa: E402
from netlab.nn import graph_metanetwork as gmn  # noqa: E402

SIZES = (64, 16, 10)
BATCH = 128  # SGD minibatch of the zoo networks
GMN_BATCH = 32  # networks per GMN step
NOTE = (
    "Reading: on this zoo the accuracy is set mostly by how far each network was trained (steps x "
    "learning rate), which the weight norms of the statistics baseline capture directly; the small "
    "GMN (hidden 16, 2 message-passing steps, 600 Adam steps) ranks the held-out networks better "
    "than chance but below that baseline. Not tuned further."
)


def _forward(p, x):
    return jnp.tanh(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]


def make_zoo(n, max_steps, seed):
    data = digits.load()
    tx, ty = jnp.asarray(data["train_x"].reshape(-1, 64)), jnp.asarray(data["train_y"])
    vx, vy = data["test_x"].reshape(-1, 64), data["test_y"]
    rng = np.random.default_rng(seed)
    lrs = jnp.asarray(10 ** rng.uniform(-3, -1, n), jnp.float32)
    steps = jnp.asarray(rng.integers(0, max_steps + 1, n))

    def init(key):
        k0, k1 = jax.random.split(key)
        return {
            "w0": jax.random.normal(k0, (64, 16)) / 8.0,
            "b0": jnp.zeros(16),
            "w1": jax.random.normal(k1, (16, 10)) / 4.0,
            "b1": jnp.zeros(10),
        }

    def loss(p, idx):
        return optax.softmax_cross_entropy_with_integer_labels(_forward(p, tx[idx]), ty[idx]).mean()

    def train(key, lr, n_steps):
        def body(i, p):
            idx = jax.random.randint(jax.random.fold_in(key, i), (BATCH,), 0, len(ty))
            g = jax.grad(loss)(p, idx)
            return jax.tree.map(lambda a, b: jnp.where(i < n_steps, a - lr * b, a), p, g)

        p = jax.lax.fori_loop(0, max_steps, body, init(key))
        return p, jnp.mean(jnp.argmax(_forward(p, vx), -1) == vy)

    keys = jax.random.split(jax.random.key(seed), n)
    params, acc = jax.jit(jax.vmap(train))(keys, lrs, steps)
    return params, np.asarray(acc)


def graphs_of(params):
    return jax.vmap(lambda p: gmn.mlp_parameter_graph([p["w0"], p["w1"]], [p["b0"], p["b1"]]))(
        params
    )


def permute_hidden(params, seed):
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(16) for _ in range(params["w0"].shape[0])])
    take = jax.vmap(lambda a, p, axis: jnp.take(a, p, axis=axis), in_axes=(0, 0, None))
    return {
        "w0": take(params["w0"], perms, 1),
        "b0": take(params["b0"], perms, 0),
        "w1": take(params["w1"], perms, 0),
        "b1": params["b1"],
    }


def stats_features(params):
    cols = []
    for k in ("w0", "b0", "w1", "b1"):
        a = np.asarray(params[k]).reshape(params[k].shape[0], -1)
        cols += [a.mean(1), a.std(1), np.linalg.norm(a, axis=1)]
    return np.stack(cols, 1)


def ridge(xtr, ytr, xte, lam=1e-2):
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
    a = np.c_[(xtr - mu) / sd, np.ones(len(xtr))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ ytr)
    return np.c_[(xte - mu) / sd, np.ones(len(xte))] @ w


def metrics(pred, y):
    r2 = 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)
    return dict(r2=float(r2), kendall_tau=float(kendalltau(pred, y)[0]),
                mae=float(np.abs(pred - y).mean()))  # fmt: skip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", type=int, default=256)
    ap.add_argument("--train", type=int, default=192)
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--gmn-steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "metanet_zoo"))
    args = ap.parse_args()
    t0 = time.time()
    params, acc = make_zoo(args.zoo, args.max_steps, args.seed)
    t_zoo = time.time() - t0
    graphs = graphs_of(params)
    tr, te = slice(0, args.train), slice(args.train, None)
    split = lambda t, s: jax.tree.map(lambda a: a[s], t)  # noqa: E731
    model = gmn.GraphMetanetwork(sizes=SIZES, hidden=16, num_layers=2)
    net = model.init(jax.random.key(args.seed), split(graphs, 0))
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, args.gmn_steps))
    state = opt.init(net)
    y_mean, y_std = acc[tr].mean(), acc[tr].std() + 1e-6
    predict = jax.vmap(lambda n, g: model.apply(n, g)[0], in_axes=(None, 0))

    @jax.jit
    def step(net, state, g, y):
        loss, grad = jax.value_and_grad(lambda n: jnp.mean((predict(n, g) - y) ** 2))(net)
        upd, state = opt.update(grad, state, net)
        return optax.apply_updates(net, upd), state, loss

    g_tr, y_tr = split(graphs, tr), jnp.asarray((acc[tr] - y_mean) / y_std)
    rng = np.random.default_rng(args.seed)
    print(f"zoo trained in {t_zoo:.0f} s; accuracy {acc.min():.2f}..{acc.max():.2f}", flush=True)
    for i in range(args.gmn_steps):
        b = rng.choice(args.train, GMN_BATCH, replace=False)
        net, state, loss = step(net, state, split(g_tr, b), y_tr[b])
        if i % 250 == 0:
            print(f"gmn step {i} loss {float(loss):.3f} ({time.time() - t0:.0f} s)", flush=True)
    pred = np.asarray(jax.jit(predict)(net, split(graphs, te))) * y_std + y_mean
    perm_pred = np.asarray(jax.jit(predict)(net, graphs_of(permute_hidden(split(params, te), 1))))
    feats = stats_features(params)
    base = ridge(feats[tr], acc[tr], feats[te])
    results = {
        "gmn": metrics(pred, acc[te]),
        "weight_stats_ridge": metrics(base, acc[te]),
        "perm_gap": float(np.abs(perm_pred * y_std + y_mean - pred).max()),
        "final_train_mse_standardised": float(loss),
        "zoo_accuracy": dict(min=float(acc.min()), mean=float(acc.mean()), max=float(acc.max())),
    }
    meta = dict(vars(args), sizes=SIZES, seconds=round(time.time() - t0, 1),
                zoo_seconds=round(t_zoo, 1), jax=jax.__version__, host=platform.node())  # fmt: skip
    out = pathlib.Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [
        "# Graph Metanetwork: test-accuracy prediction on a digits MLP zoo",
        "",
        f"`nice -n 19 .venv/bin/python bench/metanet_zoo.py` ({args.zoo} MLPs {SIZES}, "
        f"{args.train} to train the GMN, {args.zoo - args.train} held out; "
        f"zoo accuracy {acc.min():.2f}..{acc.max():.2f}; "
        f"{meta['seconds']} s wall, shared 2-core CPU)",
        "",
        "| predictor (held-out networks) | R^2 | Kendall tau | MAE |",
        "|---|---|---|---|",
    ]
    for name in ("gmn", "weight_stats_ridge"):
        m = results[name]
        lines.append(f"| {name} | {m['r2']:.3f} | {m['kendall_tau']:.3f} | {m['mae']:.4f} |")
    lines += ["", f"Largest prediction change under hidden-neuron permutation: "
              f"{results['perm_gap']:.2e}", "", NOTE, ""]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

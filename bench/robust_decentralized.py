"""Robust and federated training on CPU: MoNNA vs plain averaging under Byzantine attacks
(netlab/train/monna.py) and FedDIP accuracy vs sparsity on the digits (netlab/train/feddip.py).

    nice -n 19 python bench/robust_decentralized.py --out bench/results > runs/robust.log 2>&1 &

MoNNA part: least squares in d = 20, n = 16 workers of which f = 3 Byzantine, each honest worker
with its own 64 noisy rows of the same w* (label noise 0.1), minibatches of 8, local momentum
beta 0.9, lr 0.05, 400 steps. Every attack (none, sign flip, large noise N(0, 10^2), ALIE) is
run with NNA (keep n - f) and with plain averaging (keep n) under the same attack; reported:
the honest workers' mean full-data loss at the end (the noise floor is about 0.005), 3 seeds.

FedDIP part: an MLP 64-128-10 on scikit-learn's digits (netlab.data.digits), 10 clients with an
IID split of the training set, 40 rounds of 5 local SGD steps (batch 32, lr 0.1, weight decay
5e-4), final sparsity s_f in {0 (plain FedAvg), 0.5, 0.8, 0.9, 0.95} from s_0 = 0.5 (the
authors'), lambda up to 1e-3, mask reconfigured every round; reported: test accuracy of the
pruned model w * m (biases dense), 3 seeds.
Writes DIR/robust_decentralized.json and .md.
"""

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.data import digits
from netlab.train import feddip, monna

ATTACKS = (("none", 0.0), ("sign_flip", 1.0), ("noise", 10.0), ("alie", 1.0))


def lsq(p, batch):
    return 0.5 * jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)


def monna_run(seed, args):
    rng = np.random.default_rng(seed)
    n, f, d, rows = args.workers, args.byzantine, 20, 64
    w_star = rng.normal(size=d).astype(np.float32)
    x = rng.normal(size=(n, rows, d)).astype(np.float32)
    data = {"x": x, "y": x @ w_star + 0.1 * rng.normal(size=(n, rows)).astype(np.float32)}
    local = monna.local_optimizer(args.lr, 0.9)
    out = {}
    for kind, scale in ATTACKS:

        @jax.jit
        def run(keep, key):
            params = {"w": jnp.zeros((n, d))}
            state = jax.vmap(local.init)(params)

            def body(carry, key):
                p, s = carry
                k1, k2 = jax.random.split(key)
                idx = jax.random.randint(k1, (n, 8), 0, rows)
                batch = jax.tree.map(lambda a: jax.vmap(lambda r, i: r[i])(a, idx), data)
                p, s, _ = monna.step(lsq, local, p, s, batch, f, keep, kind, k2, scale)
                return (p, s), None

            keys = jax.random.split(key, args.steps)
            (p, _), _ = jax.lax.scan(body, (params, state), keys)
            honest = jax.tree.map(lambda a: a[: n - f], p)
            part = jax.tree.map(lambda a: a[: n - f], data)
            return jnp.mean(jax.vmap(lsq)(honest, part))

        key = jax.random.key(seed)
        losses = jax.vmap(run, in_axes=(0, None))(jnp.array([n - f, n]), key)
        out[kind] = {"monna": float(losses[0]), "plain": float(losses[1])}
        print("monna", seed, kind, out[kind], flush=True)
    return out


def mlp_init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, 128)) / 8.0,
        "b1": jnp.zeros(128),
        "w2": jax.random.normal(k2, (128, 10)) / np.sqrt(128),
        "b2": jnp.zeros(10),
    }


def mlp(p, x):
    return jnp.maximum(x @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]


def xent(p, batch):
    logits = mlp(p, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def feddip_run(seed, args):
    data = digits.load()
    tx, ty = data["train_x"].reshape(-1, 64), data["train_y"]
    vx, vy = jnp.asarray(data["test_x"].reshape(-1, 64)), jnp.asarray(data["test_y"])
    rng = np.random.default_rng(seed)
    shards = np.array_split(rng.permutation(len(tx)), args.clients)
    local = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1))
    out = {}
    for s_f in args.sparsities:
        s_0 = 0.5 if s_f >= 0.5 else s_f
        lam = (1e-3, 5e-4) if s_f > 0 else (0.0, 0.0)
        algo = feddip.FedDIP(xent, local, args.rounds, s_f, s_0, lam[0], lam[1])
        state = algo.init(mlp_init(jax.random.key(seed)))
        for _ in range(args.rounds):
            idx = np.stack([rng.choice(sh, (args.local_steps, 32)) for sh in shards])
            state = algo.round(state, {"x": tx[idx], "y": ty[idx]})
        final = algo.sparse_params(state)
        acc = float(jnp.mean(jnp.argmax(mlp(final, vx), -1) == vy))
        real = float(feddip.realised_sparsity(algo.final_mask(state)))
        out[str(s_f)] = {"accuracy": acc, "sparsity": real}
        print("feddip", seed, s_f, out[str(s_f)], flush=True)
    return out


def markdown(res) -> str:
    lines = ["# Robust and federated training (bench/robust_decentralized.py)", ""]
    a = res["args"]
    lines += [
        f"MoNNA: least squares d 20, n {a['workers']} workers, f {a['byzantine']} Byzantine, "
        f"{a['steps']} steps; honest workers' final mean loss (noise floor ~0.005), mean +- std "
        f"over {a['seeds']} seeds.",
        "",
        "| attack | MoNNA (NNA) | plain averaging |",
        "|---|---|---|",
    ]
    for kind, _ in ATTACKS:
        cells = []
        for agg in ("monna", "plain"):
            v = np.array([r[kind][agg] for r in res["monna"]])
            cells.append(f"{v.mean():.4g} +- {v.std():.2g}")
        lines.append(f"| {kind} | {cells[0]} | {cells[1]} |")
    if res.get("feddip"):
        lines += [
            "",
            f"FedDIP: MLP 64-128-10 on digits, {a['clients']} IID clients, {a['rounds']} "
            f"rounds x {a['local_steps']} local steps; test accuracy of w * m, mean +- std over "
            f"{a['seeds']} seeds (sparsity 0: plain FedAvg).",
            "",
            "| final sparsity | realised | test accuracy |",
            "|---|---|---|",
        ]
        for s in a["sparsities"]:
            acc = np.array([r[str(s)]["accuracy"] for r in res["feddip"]])
            real = res["feddip"][0][str(s)]["sparsity"]
            lines.append(f"| {s} | {real:.3f} | {acc.mean():.4f} +- {acc.std():.3f} |")
    lines += ["", f"Wall time {res['seconds']:.0f} s on {jax.devices()[0].platform}."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="folder for robust_decentralized.{json,md}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--byzantine", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--sparsities", type=float, nargs="*", default=[0.0, 0.5, 0.8, 0.9, 0.95])
    ap.add_argument("--skip-feddip", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    res = {"args": vars(args)}
    res["monna"] = [monna_run(s, args) for s in range(args.seeds)]
    if not args.skip_feddip:
        res["feddip"] = [feddip_run(s, args) for s in range(args.seeds)]
    res["seconds"] = time.time() - t0
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "robust_decentralized.json").write_text(json.dumps(res, indent=1))
        (out / "robust_decentralized.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()

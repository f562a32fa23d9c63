"""Chen et al. 2022's cluster task, trained: does the router learn to dispatch by cluster, and does
the mixture beat one expert? (netlab/moe/cluster_task.py; the paper's claim, Sec. 4-5.)

    python bench/moe_cluster.py --out bench/results      # about 8 s per seed on 2 CPU cores

Trains an MoE of 8 cubic CNN experts (16 filters each) and a single expert on the same K = 4
cluster data (2000 training, 2000 test examples, P = 4 patches of d = 50), full-batch: normalised
GD on the experts (lr 1e-2), GD on the router (lr 0.1), 1000 steps. Reports test error,
router-cluster agreement (share of test examples sent to their cluster's most frequent expert)
and how many distinct experts the clusters use, per seed; writes DIR/moe_cluster.json.
The experts' lr is 10x the paper's 1e-3 so that 1000 steps suffice.
"""

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from netlab.moe import cluster_task as C


def run(seed: int, args) -> dict:
    rng = np.random.default_rng(seed)
    train, basis = C.make_data(rng, args.n, k=args.clusters, d=args.dim)
    test, _ = C.make_data(rng, args.n, k=args.clusters, d=args.dim, basis=basis)
    x, y = jnp.asarray(train["x"]), jnp.asarray(train["y"])
    out = {"seed": seed}
    for name, experts in (("moe", args.experts), ("single", 1)):
        t0 = time.time()
        params = C.init(jax.random.key(seed), experts, args.filters, args.dim, args.init_std)
        params = C.train(
            params, x, y, jax.random.key(seed + 1), args.steps, args.expert_lr, args.router_lr
        )
        out[name] = {**C.evaluate(params, test, args.clusters), "seconds": time.time() - t0}
        print(seed, name, out[name], flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="folder for moe_cluster.json")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--clusters", type=int, default=4)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--expert-lr", type=float, default=1e-2)
    ap.add_argument("--router-lr", type=float, default=0.1)
    ap.add_argument("--init-std", type=float, default=0.01)
    args = ap.parse_args()
    runs = [run(s, args) for s in range(args.seeds)]
    if args.out:
        path = pathlib.Path(args.out) / "moe_cluster.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
        print("wrote", path)


if __name__ == "__main__":
    main()

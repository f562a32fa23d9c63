"""Full-batch training-step time of netlab vs PyTorch Geometric on this machine (GCN, GAT, SGC).

Graphs: Planetoid Cora (2708 nodes, 10,556 edges, 1433 features) and a synthetic random graph of
100k nodes / 1M directed edges with 128 features. Each step is forward + backward + Adam with the
models' dropout on; SGC propagates once and caches (PyG ``SGConv(cached=True)``), GCN uses cached
normalisation on both sides (PyG ``GCNConv(cached=True)``; netlab precomputes on the host). The two
libraries run in one process, alternating in rounds; we report median step times and the ratio
netlab / PyG (target on CPU: <= 0.7). Prints a table and saves JSON under bench/results/.

    .venv/bin/pip install torch==2.13.0 torch-geometric     # the `bench` extra (CPU wheel)
    .venv/bin/python bench/graph.py [--rounds 3] [--only cora]

Profile of the GAT step on the 100k-node graph (issue 19; `bench.perf.op_profile`, XLA:CPU thunk
times, 2-core AMD EPYC (Zen 3) VM at load ~17, so shares not absolute times): the step is
memory-bound on [E, heads, F] = [1M, 8, 8] edge tensors. Before the fix: the sender gather
h[senders] (`bitcast_gather_fusion.7`, 12% of thunk time), the bounds-check select that
`jnp.take`'s default "fill" mode adds after it (`broadcast_select_fusion.6`, 9%; plus a compare
over the [E] indices and a masked scatter-add in the transpose), the message x attention x dropout
product (7%), exp of the edge softmax (5%), the scatter-add transposes of the gathers
(`wrapped_scatter.*`, 9% together) and the YNN reductions of the backward pass. Fix
(netlab/graph/graphs.py `rows`): gathers with mode="promise_in_bounds" (every Graph index is < N)
and indices_are_sorted for receivers: the select and compare fusions are gone from the HLO (181 ->
154 select_n), and the gather and scatter-add remain as the two largest ops: XLA:CPU emits a
gather / scatter as a loop over rows. Same-load A/B (load 12-14, one round): ratio 0.60 ->
0.34 (bench/results/graph_bench_gat_fix.json, cpu_speed.md); on a quiet host the ratio is 0.58
(1137 vs 1973 ms): the one-round 0.34 was PyG slowing more than netlab under load.
Second pass (load ~15, shares only): the segment ops kept "fill or drop" mode, so the transpose
of every segment_sum at the receivers still gathered behind a compare + select over [E, 8, 8]
(`broadcast_select_fusion`, 6.6% of thunk time, plus a 3.3% masked multiply). Segment ops on a
Graph's receivers now promise in-bounds ids too (`graphs.segment_sum(..., in_bounds=True)`): the
select is gone from the profile. What remains on top, and what keeps the step above 0.4x PyG:
the forward sender gather h[senders] (`bitcast_gather_fusion.7`, [1M, 1, 8, 8], 14%), the
backward gather of node gradients at the receivers (7%), the attention product (7%), the edge
exp (4%) and the scatter-adds (`wrapped_scatter.*`, 7%). XLA:CPU emits gathers and scatters as
element loops (one index computation per element, `outer_dimension_partitions` 2), where PyG
calls index_select / scatter_add_ kernels that copy whole 256-byte rows; these element-loop
gathers and scatters, not the dots (YNN, 10% together), are the XLA:CPU operations between 0.58
and 0.4.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import common  # noqa: E402
from netlab import configlib  # noqa: E402
from netlab.graph import datasets as D  # noqa: E402
from netlab.graph import padding  # noqa: E402
from netlab.graph.task import NodeClassification  # noqa: E402

MODELS = {
    "gcn": (dict(name="gcn", hidden=16, dropout=0.5), 0.01),
    "gat": (dict(name="gat", hidden=8, heads=8, out_heads=1, dropout=0.6), 0.005),
    "sgc": (dict(name="sgc", k=2), 0.2),
}


def synthetic(n=100_000, e=1_000_000, f=128, c=10, seed=0):
    rng = np.random.default_rng(seed)
    s, r = rng.integers(0, n, e // 2), rng.integers(0, n, e // 2)
    s, r, _, _ = padding.canonical_edges(s, r, n, symmetrize=True)
    y = rng.integers(0, c, n).astype(np.int32)
    train = np.zeros(n, bool)
    train[rng.permutation(n)[: n // 10]] = True
    x = rng.normal(size=(n, f)).astype(np.float32)
    return D.NodeDataset("synthetic", x, y, s, r, c, train, ~train, ~train)


def netlab_step(ds, model, lr):
    c = common.base_config()
    c.model = ml_collections.ConfigDict(model)
    c.data = ml_collections.ConfigDict(
        dict(name=ds.name, row_normalize=False, precompute=True, edge_sharded=False)
    )
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    task = NodeClassification(c, dataset=ds)
    params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
    tx = optax.adam(lr)
    opt = tx.init(params)
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))

    @jax.jit  # the graph is an argument (device-resident), not a closed-over constant
    def step(params, opt, batch, rng):
        (loss, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(params, {}, batch, rng, True)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    state = {"p": params, "o": opt, "i": 0}
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, opt, batch, jax.random.key(0)))
    compile_s = time.perf_counter() - t0

    def run():
        state["p"], state["o"], loss = step(
            state["p"], state["o"], batch, jax.random.key(state["i"])
        )
        state["i"] += 1
        jax.block_until_ready(loss)

    return run, compile_s


def pyg_step(ds, model, lr):
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import GATConv, GCNConv, SGConv

    x = torch.from_numpy(ds.x)
    ei = torch.from_numpy(np.stack([ds.senders, ds.receivers]).astype(np.int64))
    y = torch.from_numpy(ds.y.astype(np.int64))
    train = torch.from_numpy(ds.train_mask)
    c, f = ds.num_classes, ds.x.shape[1]
    name = model["name"]
    if name == "gcn":

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.c1, self.c2 = GCNConv(f, 16, cached=True), GCNConv(16, c, cached=True)

            def forward(self, x, ei):
                x = F.dropout(x, 0.5, self.training)
                x = F.relu(self.c1(x, ei))
                return self.c2(F.dropout(x, 0.5, self.training), ei)
    elif name == "gat":

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.c1 = GATConv(f, 8, heads=8, dropout=0.6)
                self.c2 = GATConv(64, c, heads=1, concat=False, dropout=0.6)

            def forward(self, x, ei):
                x = F.dropout(x, 0.6, self.training)
                x = F.elu(self.c1(x, ei))
                return self.c2(F.dropout(x, 0.6, self.training), ei)
    else:

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.c1 = SGConv(f, c, K=2, cached=True)

            def forward(self, x, ei):
                return self.c1(x, ei)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=5e-4)
    net.train()

    def run():
        opt.zero_grad()
        out = net(x, ei)
        F.cross_entropy(out[train], y[train]).backward()
        opt.step()

    t0 = time.perf_counter()
    run()
    return run, time.perf_counter() - t0


def time_steps(run, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="graphs: cora,synthetic_100k_1M")
    ap.add_argument("--models", default="gcn,gat,sgc")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "graph_bench.json"))
    args = ap.parse_args()
    import torch
    import torch_geometric

    default_threads = torch.get_num_threads()

    graphs = {
        "cora": lambda: D.load_planetoid("cora", configlib.data_dir("")),
        "synthetic_100k_1M": synthetic,
    }
    steps = {"cora": 20, "synthetic_100k_1M": 3}
    rows = []
    print(
        f"{'graph':18s} {'model':5s} {'netlab ms':>10s} {'PyG ms':>10s} {'ratio':>6s}  (compile s)",
        flush=True,
    )
    for gname, make in graphs.items():
        if args.only and gname not in args.only.split(","):
            continue
        ds = make()
        for mname, (model, lr) in MODELS.items():
            if mname not in args.models.split(","):
                continue
            ours, compile_s = netlab_step(ds, model, lr)
            theirs, _ = pyg_step(ds, model, lr)
            time_steps(ours, 2)
            time_steps(theirs, 2)
            t_ours, t_pyg = [], {1: [], 2: []}
            for _ in range(args.rounds):  # alternate so both see the same machine load
                t_ours += time_steps(ours, steps[gname])
                for threads in (
                    2,
                    1,
                ):  # PyG at its better thread count (OpenMP suffers on a loaded host)
                    torch.set_num_threads(threads)
                    t_pyg[threads] += time_steps(theirs, steps[gname])
            torch.set_num_threads(default_threads)
            mo = 1e3 * np.median(t_ours)
            mp2, mp1 = 1e3 * np.median(t_pyg[2]), 1e3 * np.median(t_pyg[1])
            mp = min(mp1, mp2)
            rows.append(
                dict(
                    graph=gname,
                    model=mname,
                    nodes=ds.num_nodes,
                    edges=ds.num_edges,
                    features=int(ds.x.shape[1]),
                    netlab_ms=mo,
                    pyg_ms=mp,
                    pyg_ms_2threads=mp2,
                    pyg_ms_1thread=mp1,
                    ratio=mo / mp,
                    netlab_compile_s=compile_s,
                    steps=len(t_ours),
                    load_avg=os.getloadavg()[0],
                )
            )
            print(
                f"{gname:18s} {mname:5s} {mo:10.2f} {mp:10.2f} {mo / mp:6.2f}  ({compile_s:.1f})  "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    meta = dict(
        device=str(jax.devices()[0]),
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        jax=jax.__version__,
        torch=torch.__version__,
        torch_geometric=torch_geometric.__version__,
        torch_threads=default_threads,
        note="median step time, forward+backward+Adam, dropout on; PyG at the faster of 1 "
        "or 2 threads; load_avg = 1-minute load of this shared host",
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if os.path.exists(args.out):  # keep rows of graphs/models not rerun this time
        with open(args.out) as f:
            old = json.load(f).get("rows", [])
        done = {(r["graph"], r["model"]) for r in rows}
        rows = [r for r in old if (r["graph"], r["model"]) not in done] + rows
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print("saved", args.out)


if __name__ == "__main__":
    main()

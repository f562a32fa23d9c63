"""Graph Parsing Networks (Song et al., ICLR 2024; netlab/graph/gpn.py): a GCN encoder, then
``model.levels`` x [GCN, parse the graph into clusters by dominant edges, pool to the quotient
graph], mean readouts of every level summed into an MLP head; graph classification on the sets
the graph task makes offline: the Erdős–Rényi vs Barabási–Albert toy set (``data=synthetic``),
CSL (10 classes, 150 graphs of 41 nodes) or EXP-style WL-equivalent pairs.

    python -m netlab.main --config configs/graph/gpn.py:cpu --workdir runs/gpn_synthetic
    python -m netlab.main --config configs/graph/gpn.py:data=csl --workdir runs/gpn_csl

Argument: data=synthetic|csl|exp and a preset (cpu | gpu | pod). No TU dataset is in the dataset
registry yet, so the paper's TU benchmarks (PROTEINS, NCI1, ...) have no variant here. The
hyperparameters are netlab's choice (hidden 64, 2 parsing levels, Adam 3e-3 constant), not the
paper's tuned values; the number of levels is fixed (static shapes) where the authors parse
until the graph stops shrinking.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
# (graphs, max nodes per graph, max directed edges per graph); synthetic: gin_synthetic.py's sizes
DATA = {"synthetic": (600, 40, 160), "csl": (150, 41, 164), "exp": (200, 16, 48)}
VARIANTS = tuple(f"data={d}" for d in DATA)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, data="synthetic")
    if a.data not in DATA:
        raise ValueError(f"data={a.data!r}; choose one of {', '.join(DATA)}")
    c = common.base_config()
    c.task = "graph.graph_classification"
    c.model = ml_collections.ConfigDict(
        dict(name="gpn", hidden=64, levels=2, self_loops=True, dropout=0.0)
    )
    num_graphs, nodes, edges = DATA[a.data]
    per_batch = 16
    c.data = ml_collections.ConfigDict(
        dict(
            name=a.data,
            num_graphs=num_graphs,
            graphs_per_batch=per_batch,
            max_nodes=per_batch * nodes + 8,
            max_edges=per_batch * edges,
            num_buckets=1 if a.data != "synthetic" else 4,
            test_fraction=0.2,
        )
    )
    c.train.steps = 400
    c.train.batch_size = 2
    c.train.log_every = 50
    c.train.eval_every = 200
    c.checkpoint.every = 200
    c.optimizer.name = "adam"
    c.optimizer.lr = 3e-3
    c.optimizer.schedule = "constant"
    if a.preset in ("gpu", "pod"):
        c.train.batch_size = 8
    return c

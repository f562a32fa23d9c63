"""PathNN (Michel et al., ICML 2023) node classification on Planetoid (public split).

    python -m netlab.main --config configs/graph/pathnn.py:variant=ap,data=cora \
        --workdir runs/pathnn_cora

Argument: variant=sp|sp+|ap (the path set), cutoff (paths of up to cutoff-1 edges, default 3),
data=cora|citeseer, and a preset (cpu | gpu | pod: edge arrays split over all devices). Paths are
enumerated once on the host when the task is built; raise model.max_paths if a length bucket
overflows a fixed budget. Hyperparameters are netlab's choice (GCN's Planetoid schedule, 64
hidden, dropout 0.5 on inputs and before the head, L2 5e-4), not the paper's (which evaluates
graph classification).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = tuple(f"variant={v},data={d}" for v in ("sp", "sp+", "ap") for d in ("cora", "citeseer"))


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, variant="ap", cutoff=3, data="cora")
    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(
        dict(
            name="pathnn",
            hidden=64,
            cutoff=a.cutoff,
            variant=a.variant,
            max_paths=0,
            dropout=0.5,
            input_dropout=0.5,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            name=a.data,
            data_dir="",
            split=0,
            row_normalize=True,
            edge_sharded=False,
            precompute=True,
        )
    )
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    c.train.steps = 200
    c.train.batch_size = 0
    c.train.log_every = 20
    c.train.eval_every = 40
    c.checkpoint.every = 200
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = -1
    c.data.edge_sharded = a.preset == "pod"
    return c

"""LASER (Barbero et al., ICLR 2024): locality-aware sparse rewiring + GCN, node classification on
Planetoid (public split).

    python -m netlab.main --config configs/graph/laser.py:data=cora --workdir runs/laser_cora

Argument: data=cora|citeseer, rho (share of each r-hop orbit connected, default 0.5), max_hop
(R, default 3), and a preset (cpu | gpu | pod: edge arrays split over all devices). The rewiring
is computed once on the host when the task is built (dense (A + I)^8: Planetoid-sized graphs);
raise model.max_added_edges if a fixed snapshot budget overflows. Hyperparameters are netlab's
choice (GCN's Planetoid schedule, 64 hidden, 2 layers, dropout 0.5, L2 5e-4), not the paper's
(which evaluates LRGB / TUDataset graph tasks).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = tuple(f"data={d}" for d in ("cora", "citeseer"))


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, data="cora", rho=0.5, max_hop=3)
    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(
        dict(
            name="laser",
            hidden=64,
            num_layers=2,
            max_hop=a.max_hop,
            rho=a.rho,
            min_add=1,
            seed=0,
            max_added_edges=0,
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

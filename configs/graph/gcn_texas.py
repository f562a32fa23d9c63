"""GCN on the heterophilic geom-gcn Texas set (Pei et al. 2020), split data.split of their 10
(48/32/20).

    python -m netlab.main --config configs/graph/gcn_texas.py:cpu --workdir runs/gcn_texas \
        --config.data.split=3
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    common.parse_preset(arg, PRESETS)  # validates the preset; all presets are the same
    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(dict(name="gcn", hidden=64, num_layers=2, dropout=0.5))
    c.data = ml_collections.ConfigDict(
        dict(
            name="texas",
            data_dir="",
            split=0,
            row_normalize=True,
            edge_sharded=False,
            precompute=True,
        )
    )
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    c.train.steps = 300
    c.train.batch_size = 0
    c.train.log_every = 50
    c.train.eval_every = 100
    c.checkpoint.every = 300
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.mesh.data = -1  # full graph replicated on every device (identical gradients)
    return c

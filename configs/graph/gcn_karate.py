"""GCN (Kipf & Welling, ICLR 2017) on Zachary's karate club: two labelled leaders, 32 to predict.

python -m netlab.main --config configs/graph/gcn_karate.py:cpu --workdir runs/gcn_karate
# seconds on a laptop CPU; see notebooks/graph_karate.ipynb for the embedding plot.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(dict(name="gcn", hidden=16, num_layers=2, dropout=0.5))
    c.data = ml_collections.ConfigDict(
        dict(
            name="karate",
            data_dir="",
            split=0,
            row_normalize=True,
            edge_sharded=False,
            precompute=True,
        )
    )
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope="conv0"))
    c.train.steps = 200
    c.train.batch_size = 0
    c.train.log_every = 20
    c.train.eval_every = 100
    c.checkpoint.every = 200
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.mesh.data = -1  # every device; cpu/gpu: full graph replicated, pod: edges sharded
    if preset == "pod":
        c.data.edge_sharded = True
    return c

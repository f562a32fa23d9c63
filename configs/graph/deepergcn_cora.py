"""DeeperGCN (Li et al. 2020): GENConv softmax aggregation (learned temperature), res+ blocks, on
Cora (public split). A small configuration for CPU; the paper's own results are on OGB (not
offline).

    python -m netlab.main --config configs/graph/deepergcn_cora.py:cpu \
        --workdir runs/deepergcn_cora
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(
        dict(
            name="deepergcn",
            hidden=64,
            num_layers=4,
            dropout=0.5,
            t=1.0,
            learn_t=True,
            msg_norm=False,
            mlp_norm="layer",  # GENConv MLP norm: batch | layer | instance | none
            bias=False,  # biases in GENConv's linear maps (PyG's default: none)
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            name="cora",
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
    c.train.log_every = 30
    c.train.eval_every = 100
    c.checkpoint.every = 300
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.005
    c.optimizer.schedule = "constant"
    c.mesh.data = -1  # full graph replicated on every device (identical gradients)
    if preset in ("gpu", "pod"):
        c.train.steps = 1000
    return c

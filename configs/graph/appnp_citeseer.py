"""APPNP (Klicpera et al., ICLR 2019) on CiteSeer, public split: MLP 64 hidden, dropout 0.5, K = 10, alpha = 0.1, Adam 0.01.

    python -m netlab.main --config configs/graph/appnp_citeseer.py:cpu --workdir runs/appnp_citeseer
    # data from config.data.data_dir, else $NETLAB_DATA_DIR, else ../shared/data.
    # Reproduction over 10 seeds with the paper's early stopping: python bench/graph_reproduce.py
"""
import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "netlab.graph.task:NodeClassification"
    c.model = ml_collections.ConfigDict(dict(name="appnp", hidden=64, dropout=0.5, k=10, alpha=0.1, edge_dropout=0.0))
    c.data = ml_collections.ConfigDict(dict(name="citeseer", data_dir="", split=0, row_normalize=True,
                                            edge_sharded=False, precompute=True))
    # paper: L2 5e-3 on the first layer's weights.
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-3, weight_decay_scope="lin0"))
    c.train.steps = 500
    c.train.batch_size = 0             # full batch: the whole graph every step
    c.train.log_every = 50
    c.train.eval_every = 100
    c.checkpoint.every = 500
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = 1                    # one replica; set data=-1 with data.edge_sharded=True to split edges
    if preset in ("gpu", "pod"):
        c.data.edge_sharded = preset == "pod"
        c.mesh.data = -1 if preset == "pod" else 1
    return c

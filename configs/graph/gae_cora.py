"""Link prediction on Cora: GCN encoder + inner-product decoder (Kipf & Welling 2016, GAE), 85/5/10
edge split, one random negative per positive each step; val/test ROC-AUC.

    python -m netlab.main --config configs/graph/gae_cora.py:cpu --workdir runs/gae_cora
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "graph.link_prediction"
    c.model = ml_collections.ConfigDict(dict(name="link_predictor", hidden=32, out=16, dropout=0.0))
    c.data = ml_collections.ConfigDict(
        dict(name="cora", data_dir="", val_fraction=0.05, test_fraction=0.1, edge_sharded=False)
    )
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

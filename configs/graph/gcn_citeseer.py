"""GCN (Kipf & Welling, ICLR 2017) on CiteSeer, public split: 2 layers, 16 hidden, dropout 0.5, Adam 0.01, L2 5e-4 on layer 1, 200 epochs.

    python -m netlab.main --config configs/graph/gcn_citeseer.py:cpu --workdir runs/gcn_citeseer
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
    c.model = ml_collections.ConfigDict(dict(name="gcn", hidden=16, num_layers=2, dropout=0.5))
    c.data = ml_collections.ConfigDict(dict(name="citeseer", data_dir="", split=0, row_normalize=True,
                                            edge_sharded=False, precompute=True))
    # Kipf: weight_decay * l2_loss on the first layer's parameters only.
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope="conv0"))
    c.train.steps = 200
    c.train.batch_size = 0             # full batch: the whole graph every step
    c.train.log_every = 20
    c.train.eval_every = 40
    c.checkpoint.every = 200
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = 1                    # one replica; set data=-1 with data.edge_sharded=True to split edges
    if preset in ("gpu", "pod"):
        c.data.edge_sharded = preset == "pod"
        c.mesh.data = -1 if preset == "pod" else 1
    return c

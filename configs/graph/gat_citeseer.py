"""GAT (Velickovic et al., ICLR 2018) on CiteSeer, public split: 8 heads x 8, dropout 0.6 (input + attention), ELU, Adam 0.005, L2 5e-4.

    python -m netlab.main --config configs/graph/gat_citeseer.py:cpu --workdir runs/gat_citeseer
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
    c.model = ml_collections.ConfigDict(dict(name="gat", hidden=8, heads=8, out_heads=1, dropout=0.6))
    c.data = ml_collections.ConfigDict(dict(name="citeseer", data_dir="", split=0, row_normalize=True,
                                            edge_sharded=False, precompute=True))
    # L2 on all parameters, as the paper (and PyG's Adam weight_decay).
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    c.train.steps = 1000
    c.train.batch_size = 0             # full batch: the whole graph every step
    c.train.log_every = 100
    c.train.eval_every = 200
    c.checkpoint.every = 1000
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.005
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = 1                    # one replica; set data=-1 with data.edge_sharded=True to split edges
    if preset in ("gpu", "pod"):
        c.data.edge_sharded = preset == "pod"
        c.mesh.data = -1 if preset == "pod" else 1
    return c

"""SGC (Wu et al., ICML 2019) on Cora, public split: K = 2, Adam 0.2, 100 epochs, no dropout, tuned weight decay.

    python -m netlab.main --config configs/graph/sgc_cora.py:cpu --workdir runs/sgc_cora
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
    c.model = ml_collections.ConfigDict(dict(name="sgc", k=2))
    c.data = ml_collections.ConfigDict(dict(name="cora", data_dir="", split=0, row_normalize=True,
                                            edge_sharded=False, precompute=True))
    # weight decay tuned on the validation set (bench/graph_reproduce.py --tune-sgc).
    c.loss = ml_collections.ConfigDict(dict(weight_decay=3e-5, weight_decay_scope=""))
    c.train.steps = 100
    c.train.batch_size = 0             # full batch: the whole graph every step
    c.train.log_every = 10
    c.train.eval_every = 20
    c.checkpoint.every = 100
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.2
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = 1                    # one replica; set data=-1 with data.edge_sharded=True to split edges
    if preset in ("gpu", "pod"):
        c.data.edge_sharded = preset == "pod"
        c.mesh.data = -1 if preset == "pod" else 1
    return c

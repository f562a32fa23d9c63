"""Neural Sheaf Diffusion (Bodnar et al., NeurIPS 2022) on Texas, geom-gcn split `data.split` (0-9).

    python -m netlab.main --config configs/graph/sheaf_texas.py:cpu --workdir runs/sheaf_texas
    # paper (10 splits): Diag 85.67±6.95, O(d) 85.95±5.51, Gen 82.97±5.13; set model.map_type.
    # all 10 splits with early stopping: python bench/graph_reproduce_advanced.py --only sheaf
"""
import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
DATASET = "texas"


def nsd_config(preset, dataset, **model):
    c = common.base_config()
    c.task = "netlab.graph.continuous_task:DiffusionNodeClassification"
    c.model = ml_collections.ConfigDict(dict(
        name="nsd", d=3, hidden_channels=16, num_layers=4, map_type="diag", orth_method="householder",
        nonlinear=False, input_dropout=0.0, dropout=0.5, left_weights=True, right_weights=True,
        use_epsilons=True, augmented=True, use_act=True))
    c.model.update(model)
    c.data = ml_collections.ConfigDict(dict(name=dataset, data_dir="", split=0, row_normalize=False))
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-3, weight_decay_scope=""))
    c.train.steps = 300
    c.train.batch_size = 0
    c.train.log_every = 50
    c.train.eval_every = 100
    c.checkpoint.every = 300
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.02
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = 1
    return c


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    return nsd_config(preset, DATASET)

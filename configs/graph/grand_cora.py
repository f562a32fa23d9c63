"""GRAND-l (Chamberlain et al., ICML 2021) on Cora, Planetoid public split: linear attention
diffusion to T = 18 with fixed-step RK4 (the paper integrates with dopri5; set
model.method=dopri5).

    python -m netlab.main --config configs/graph/grand_cora.py:cpu --workdir runs/grand_cora
    # paper: 83.6±1.0 on random splits of the largest connected component (not this split).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    common.parse_preset(arg, PRESETS)  # validates the preset; all presets are the same
    c = common.base_config()
    c.task = "graph.continuous_node_classification"
    c.model = ml_collections.ConfigDict(
        dict(
            name="grand",
            hidden_dim=64,
            time=18.0,
            method="rk4",
            num_steps=18,
            rtol=1e-3,
            atol=1e-4,
            max_steps=64,
            heads=4,
            key_dim=16,
            self_loops=True,
            nonlinear=False,
            input_dropout=0.5,
            dropout=0.05,
        )
    )
    c.data = ml_collections.ConfigDict(dict(name="cora", data_dir="", split=0, row_normalize=True))
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    c.train.steps = 200
    c.train.batch_size = 0
    c.train.log_every = 20
    c.train.eval_every = 50
    c.checkpoint.every = 200
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = 1
    return c

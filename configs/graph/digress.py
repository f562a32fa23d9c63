"""DiGress (Vignac et al., ICLR 2023) on the regenerated SPECTRE planar (or SBM) set: a tiny
unconditional graph-generation run; ``evaluate`` samples graphs and reports validity, uniqueness,
novelty, V.U.N. and the degree / clustering / spectrum MMD^2 against the test split.

python -m netlab.main --config configs/graph/digress.py:cpu --workdir runs/digress_planar
python -m netlab.main --config configs/graph/digress.py:cpu,data=sbm --workdir runs/digress_sbm
# cpu: 2 layers, dx 32, T = 100 (minutes; the paper: 10 layers, dx 256, T = 1000, batch 64)
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")  # pod: the gpu (paper) sizes, data-parallel over every device
VARIANTS = ("data=planar", "data=sbm")


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, data="planar")
    if a.data not in ("planar", "sbm"):
        raise ValueError(f"data={a.data!r}; choose planar or sbm")
    big = a.preset in ("gpu", "pod")
    c = common.base_config()
    c.task = "graph.generation"
    c.model = ml_collections.ConfigDict(
        dict(
            name="digress",
            dx=256 if big else 32,
            de=64 if big else 8,
            dy=64 if big else 16,
            num_layers=10 if big else 2,
            heads=8 if big else 4,
            features="all",
            dropout=0.1 if big else 0.0,  # the authors' transformer layers: 0.1
        )
    )
    c.data = ml_collections.ConfigDict(dict(name=a.data, num_graphs=200, seed=0))
    c.diffusion = ml_collections.ConfigDict(
        dict(T=1000 if big else 100, lam=5.0, eval_samples=40 if big else 8)
    )
    c.train.steps = 100_000 if big else 1000
    c.train.batch_size = 64 if big else 8
    c.train.log_every = 50
    c.train.eval_every = 0
    c.checkpoint.every = c.train.steps
    c.optimizer.name = "adamw"
    c.optimizer.lr = 2e-4 if big else 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 1e-12
    c.optimizer.amsgrad = big  # the authors' AdamW(amsgrad=True, weight_decay=1e-12)
    c.mesh.data = -1
    return c

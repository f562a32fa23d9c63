"""RNAR (Xu & Veličković 2024): an encode-process-decode reasoner trained on CLRS-style Quickselect
traces with hint supervision (netlab/graph/nar_task.py), scored on arrays of the training size
(eval/test_acc) and of twice that size (eval/ood_acc), for the LSTM aggregator or max / sum.

    python -m netlab.main --config configs/graph/rnar.py:aggregator=lstm --workdir runs/rnar_lstm
    python -m netlab.main --config configs/graph/rnar.py:aggregator=max --workdir runs/rnar_max

Argument: aggregator=lstm|max|sum and a preset (cpu | gpu | pod). cpu: arrays of 8 keys (OOD 16),
hidden 32, batch 16, 500 steps (a few minutes on 2 cores). gpu / pod: CLRS-30's sizes (train 16,
test 64), hidden 128, batch 32, 10,000 steps (CLRS's examples/run.py schedule: Adam 1e-3, clip 1).
The paper trains Triplet-GMPNN-style processors on mixed sizes; netlab's processor and sizes are
its own.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
AGGREGATORS = ("lstm", "max", "sum")
VARIANTS = tuple(f"aggregator={a}" for a in AGGREGATORS)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, aggregator="lstm")
    if a.aggregator not in AGGREGATORS:
        raise ValueError(f"aggregator={a.aggregator!r}; choose one of {', '.join(AGGREGATORS)}")
    c = common.base_config()
    c.task = "graph.algorithmic_reasoning"
    c.model = ml_collections.ConfigDict(dict(name="rnar", hidden=32, aggregator=a.aggregator))
    c.data = ml_collections.ConfigDict(
        dict(n_train=8, n_ood=16, steps_per_node=5, num_eval=64, eval_batch=64)
    )
    c.train.steps = 500
    c.train.batch_size = 16
    c.train.log_every = 50
    c.train.eval_every = 500
    c.checkpoint.every = 500
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.clip_norm = 1.0
    c.mesh.data = -1  # data-parallel over every device (batch rows split)
    if a.preset in ("gpu", "pod"):
        c.model.hidden = 128
        c.data.n_train, c.data.n_ood = 16, 64
        c.train.batch_size = 32
        c.train.steps = 10_000
        c.train.eval_every = 1000
        c.checkpoint.every = 1000
    return c

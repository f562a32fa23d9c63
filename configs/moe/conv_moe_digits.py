"""Convolutional mixtures of experts classifying scikit-learn's digits (8x8, one channel).

    python -m netlab.main --config configs/moe/conv_moe_digits.py:model=condconv \
        --workdir runs/condconv
    python -m netlab.main --config configs/moe/conv_moe_digits.py:model=pmoe --workdir runs/pmoe

Argument: model=condconv|pmoe and a preset (cpu | gpu | pod).
- condconv (Yang et al., NeurIPS 2019): two CondConv blocks (16, 32 channels, 4 experts each,
  per-example sigmoid routing, 2x2 average pooling between them), global average, linear head.
- pmoe (Chowdhury et al., ICML 2023): 2x2 patches, 4 experts that each pick l = 4 of the 16
  patches of an image by their own router score, gated by a softmax over the l patches (the
  paper's router, model.moe.router="pmoe"), ReLU experts of 32 units, mean over patches, linear
  head; no auxiliary loss, as in the paper (every expert takes exactly l patches):
  `loss.load_balance` / `loss.z_loss` are 0 (set them to weight the router's balance / z-losses).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = ("model=condconv", "model=pmoe")

MODELS = {
    "condconv": dict(name="condconv", channels=(16, 32), num_experts=4, kernel_size=3),
    "pmoe": dict(
        name="pmoe",
        features=32,
        num_experts=4,
        patch=2,
        patches_per_expert=4,
        hidden=32,
        moe=ml_collections.ConfigDict(
            dict(backend="capacity", router="pmoe", expert_axis="expert")
        ),
    ),
}


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, model="condconv")
    if a.model not in MODELS:
        raise ValueError(f"model={a.model!r}; choose one of {', '.join(MODELS)}")
    c = common.base_config()
    c.task = "netlab.moe.task:MoEDigits"
    c.model = ml_collections.ConfigDict(MODELS[a.model])
    c.data = ml_collections.ConfigDict(dict(test_fraction=0.2))
    c.loss = ml_collections.ConfigDict(dict(load_balance=0.01, z_loss=1e-3))
    if a.model == "pmoe":  # the paper trains without auxiliary losses
        c.loss.load_balance, c.loss.z_loss = 0.0, 0.0
    c.train.steps = 600
    c.train.batch_size = 128
    c.train.eval_every = 200
    c.checkpoint.every = 200
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 1e-4
    c.optimizer.clip_norm = 1.0
    if a.preset in ("gpu", "pod"):
        c.train.compute_dtype = "bfloat16"
    if a.preset == "pod":
        c.train.batch_size = 1024
    return c

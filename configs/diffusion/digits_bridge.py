"""Paired translation digits edge map -> digit with a DDBM bridge sampled by DBIM
(netlab/diffusion/bridge_task.py says what is trained and measured).

    python -m netlab.main --config configs/diffusion/digits_bridge.py:cpu \
        --workdir runs/digits_bridge
    # eval/bridge_fd and eval/bridge_mse (and the identity baseline's identity_fd, identity_mse)
    # in metrics.jsonl; samples/step_<n>.png: rows of edge maps, translations, targets.
    # DDBM's own hybrid sampler instead of DBIM, or DBIM's 2nd-order solver:
    #   --config.bridge.sampler=ddbm      --config.bridge.order=2
    python -m netlab.main --config configs/diffusion/digits_bridge.py:gpu --workdir runs/bridge_gpu
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "diffusion.digits_bridge"
    c.model = ml_collections.ConfigDict(
        dict(backbone="dit", variant="", depth=4, width=128, num_heads=4, patch=2, mlp="dense")
    )
    c.bridge = ml_collections.ConfigDict(
        dict(
            logsnr_T=-1.0,  # the source (edge map) end; DDBM's VP bridge: -0.69
            logsnr_max=8.0,  # the cleanest training / sampling log-SNR before sigma = 0
            sampler="dbim",  # dbim | ddbm
            sample_steps=10,
            eta=0.0,  # DBIM: 0 deterministic, 1 the bridge posterior (DDBM's ancestral sampler)
            order=1,  # DBIM's high-order solver: 2 or 3 (deterministic, eta = 0)
            churn_step_ratio=0.33,  # the "ddbm" sampler's SDE share of each step
        )
    )
    c.eval = ml_collections.ConfigDict(dict(num_samples=360))  # the whole test split
    c.train.steps = 1500
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.eval_every = 500
    c.checkpoint.every = 500
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 200
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 1.0
    c.optimizer.ema_stds = (0.1,)
    if preset == "gpu":
        c.train.compute_dtype = "bfloat16"
        c.model.variant = "S/2"
        c.train.steps = 20000
        c.train.batch_size = 256
        c.train.eval_every = 5000
    return c

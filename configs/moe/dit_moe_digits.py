"""DiT-MoE (shared experts, un-renormalised top-2, expert-level balance loss α=0.01) on the digits.

    python -m netlab.main --config configs/moe/dit_moe_digits.py:cpu --workdir runs/dit_moe
    # expert parallelism on 8 fake CPU devices (data=2 x expert=4):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m netlab.main \
        --config configs/moe/dit_moe_digits.py:cpu --workdir runs/dit_moe8 \
        --config.mesh.data=2 --config.mesh.expert=4 --config.model.moe.backend=ep

Same diffusion settings and evaluation (samples/, eval/digits_fd) as configs/diffusion/digits_dit.py.
"""
import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "netlab.moe.dit_task:DiTMoEDigits"
    c.model = ml_collections.ConfigDict(dict(
        variant="", depth=4, width=128, num_heads=4, patch=2, label_dropout=0.1, learn_logvar=False,
        moe_every=2,
        moe=ml_collections.ConfigDict(dict(
            num_experts=8, hidden=128, k=2, num_shared=2, router="topk", backend="capacity",
            capacity_factor=2.0, eval_capacity_factor=2.0)),
    ))
    c.diffusion = ml_collections.ConfigDict(dict(
        schedule="cosine_shifted", shift=0.0, parameterization="v", weighting="v",
        time_sampling="antithetic", p_mean=-1.2, p_std=1.2, min_snr_gamma=5.0,
        sampler="dpmpp_2m", sample_steps=20, grid="uniform_logsnr", guidance=1.5))
    c.eval = ml_collections.ConfigDict(dict(num_samples=200))
    c.loss = ml_collections.ConfigDict(dict(load_balance=0.01))
    c.train.steps = 3000
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 200
    c.optimizer.clip_norm = 1.0
    c.optimizer.ema_decay = 0.999
    if preset == "gpu":
        c.train.compute_dtype = "bfloat16"
        c.model.width, c.model.depth, c.model.num_heads, c.model.moe.hidden = 384, 12, 6, 768
        c.train.steps, c.train.batch_size, c.train.eval_every = 20000, 256, 5000
    if preset == "pod":
        c.train.compute_dtype = "bfloat16"
        c.model.width, c.model.depth, c.model.num_heads, c.model.moe.hidden = 768, 12, 12, 1536
        c.model.moe.num_experts = 16
        c.train.batch_size = 1024
        c.train.steps = 50000
        c.mesh.data, c.mesh.expert = -1, 8
    return c

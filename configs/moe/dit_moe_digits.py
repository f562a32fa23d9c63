"""DiT-MoE (shared experts, un-renormalised top-2, expert-level balance loss) on the digits.

    python -m netlab.main --config configs/moe/dit_moe_digits.py:cpu --workdir runs/dit_moe
    # expert parallelism on 8 fake CPU devices (data=2 x expert=4):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m netlab.main \
        --config configs/moe/dit_moe_digits.py:cpu --workdir runs/dit_moe8 \
        --config.mesh.data=2 --config.mesh.expert=4 --config.model.mlp_kwargs.backend=ep

The diffusion pillar's digits task and DiT (configs/diffusion/digits_dit.py: same diffusion
settings, samples/ and eval/digits_fd) with `model.mlp = "dit_moe"` (netlab/moe/dit_moe_mlp.py:
SwiGLU experts, 2 shared experts, softmax top-2 without renormalisation); `model.mlp_kwargs` are
that MLP's fields. As in the reference code (feizc/DiT-MoE `models.py`): an MoE MLP in every block
(`model.mlp_every = 1`); no token dropped (the reference trains without a capacity: backend
`dropless`, and capacity factors 0 = "never drop", C = S, so that `backend=ep` / `capacity` keep
every token too); the balance loss weight alpha = 0.01 per layer, i.e. applied to the SUM of the
layers' balance losses (`model.mlp_kwargs.load_balance_weight`, nothing divides it). The layers'
routing metrics are logged as train/aux/<name>.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "diffusion.digits"
    c.model = ml_collections.ConfigDict(
        dict(
            backbone="dit",
            variant="",
            depth=4,
            width=128,
            num_heads=4,
            patch=2,
            label_dropout=0.1,
            learn_logvar=False,
            mlp="dit_moe",
            mlp_every=1,  # MoE in every block (the reference)
            mlp_kwargs=ml_collections.ConfigDict(
                dict(
                    num_experts=8,
                    hidden=128,
                    k=2,
                    num_shared=2,
                    router="topk",
                    backend="dropless",  # the reference trains without a capacity
                    capacity_factor=0.0,  # <= 0: never drop (C = S) on the slotted backends
                    eval_capacity_factor=0.0,
                    load_balance_weight=0.01,  # alpha per layer: on the sum over the layers
                    expert_axis="expert",
                )
            ),
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="cosine_shifted",
            shift=0.0,
            parameterization="v",
            weighting="v",
            time_sampling="antithetic",
            p_mean=-1.2,
            p_std=1.2,
            min_snr_gamma=5.0,
            sampler="dpmpp_2m",
            sample_steps=20,
            grid="uniform_logsnr",
            sampler_kwargs=None,
            guidance=1.5,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(num_samples=200))
    c.train.steps = 3000
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 200
    c.optimizer.clip_norm = 1.0
    c.optimizer.ema_decay = 0.999
    m = c.model
    if preset == "gpu":
        c.train.compute_dtype = "bfloat16"
        m.width, m.depth, m.num_heads, m.mlp_kwargs.hidden = 384, 12, 6, 768
        c.train.steps, c.train.batch_size, c.train.eval_every = 20000, 256, 5000
    if preset == "pod":
        c.train.compute_dtype = "bfloat16"
        m.width, m.depth, m.num_heads, m.mlp_kwargs.hidden = 768, 12, 12, 1536
        m.mlp_kwargs.num_experts = 16
        c.train.batch_size = 1024
        c.train.steps = 50000
        c.mesh.data, c.mesh.expert = -1, 8
        m.mlp_kwargs.backend = "capacity"  # experts split over the expert axis; C = S: no drops
    return c

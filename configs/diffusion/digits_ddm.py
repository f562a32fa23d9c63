"""Decentralized Diffusion Models on the digits images: K class-conditional DiT experts, each
trained alone on one k-means cluster of the training pixels, ensembled by a small router.

    python -m netlab.main --config configs/diffusion/digits_ddm.py:cpu --workdir runs/digits_ddm
    # cpu: ~10 minutes on 2 cores; eval/digits_fd (full ensemble), eval/digits_fd_top1 (top-1
    # routing), train/router_acc. One expert per island on 4 (fake) devices:
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m netlab.main \
        --config configs/diffusion/digits_ddm.py:cpu --workdir runs/digits_ddm4 \
        --config.mesh.island=4
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "diffusion.digits_ddm"
    c.model = ml_collections.ConfigDict(
        dict(
            backbone="dit",
            variant="",
            depth=4,
            width=96,
            num_heads=4,
            patch=2,
            mlp="dense",
            label_dropout=0.1,
            learn_logvar=False,
        )
    )
    c.ddm = ml_collections.ConfigDict(
        dict(
            num_experts=4,  # K experts, one per k-means cluster of the training images
            partition="kmeans",  # kmeans | random
            top_k=0,  # 0 = full ensemble at sampling, 1 = top-1 routing, ...
            router_width=128,
            router_depth=2,
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
            grid_final=None,
            sampler_kwargs=None,
            guidance=1.0,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(num_samples=1000))
    c.train.steps = 1500
    c.train.batch_size = 128  # K blocks of 128 / K rows, one per partition
    c.train.log_every = 100
    c.train.eval_every = 500
    c.checkpoint.every = 500
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 200
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 0.0  # a global norm would couple the experts
    c.sharding.rules = (("ddm_expert", "island"),) + tuple(c.sharding.rules)
    if preset == "gpu":
        c.train.compute_dtype = "bfloat16"
        c.model.variant = "S/2"
        c.train.steps = 20000
        c.train.batch_size = 256
        c.train.eval_every = 5000
    if preset == "pod":
        c.train.compute_dtype = "bfloat16"
        c.model.variant = "B/2"
        c.train.batch_size = 1024
        c.train.steps = 50000
        c.mesh.island, c.mesh.data = c.ddm.num_experts, -1
    return c

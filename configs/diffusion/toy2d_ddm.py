"""Decentralized Diffusion Models on the 2-D toy mixture: K MLP experts on k-means partitions.

python -m netlab.main --config configs/diffusion/toy2d_ddm.py:cpu --workdir runs/toy2d_ddm
# a couple of minutes on 2 cores; eval/sliced_wasserstein (full ensemble) and
# eval/sliced_wasserstein_top1 (top-1 routing); train/router_acc. Experts on separate islands:
XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m netlab.main \
    --config configs/diffusion/toy2d_ddm.py:cpu --workdir runs/toy2d_ddm4 --config.mesh.island=4
# (ddm.num_experts must be a multiple of mesh.island; netlab/diffusion/ddm_task.py)
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "diffusion.toy2d_ddm"
    c.model = ml_collections.ConfigDict(dict(backbone="mlp", width=128, depth=3))
    c.data = ml_collections.ConfigDict(dict(mode_std=0.15))
    c.ddm = ml_collections.ConfigDict(
        dict(
            num_experts=4,  # K experts, one per k-means cluster of the training points
            partition="kmeans",  # kmeans | random (equal random shards: the paper's ablation)
            num_points=16384,  # the fixed training set drawn from the mixture
            top_k=0,  # router sparsification at sampling: 0 = full ensemble, 1 = top-1, ...
            router_width=64,
            router_depth=2,
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="cosine",
            shift=0.0,
            parameterization="v",
            weighting="v",
            time_sampling="uniform",
            p_mean=-1.2,
            p_std=1.2,
            min_snr_gamma=5.0,
            sampler="dpmpp_2m",
            sample_steps=25,
            grid="uniform_logsnr",
            grid_final=None,
            guidance=1.0,
            sampler_kwargs=None,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(num_samples=2000))
    c.train.steps = 2000
    c.train.batch_size = 256  # K blocks of 256 / K rows, one per partition
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    c.optimizer.lr = 2e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.ema_decay = 0.995
    c.optimizer.clip_norm = 0.0  # a global norm would couple the experts
    # the experts' leading axis on the island mesh axis: expert k trains on island k
    c.sharding.rules = (("ddm_expert", "island"),) + tuple(c.sharding.rules)
    if preset in ("gpu", "pod"):
        c.train.batch_size = 4096
        c.model.width = 512
    if preset == "pod":
        c.mesh.island, c.mesh.data = c.ddm.num_experts, -1
    return c

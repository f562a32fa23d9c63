"""Diffusion on a 2-D Gaussian mixture (8 modes on a circle) with an MLP denoiser.

python -m netlab.main --config configs/diffusion/toy2d.py:cpu --workdir runs/toy2d
# about a minute on 2 cores; eval/sliced_wasserstein falls, samples/step_<n>.png shows the modes.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "diffusion.toy2d"
    c.model = ml_collections.ConfigDict(dict(backbone="mlp", width=128, depth=3))
    c.data = ml_collections.ConfigDict(dict(mode_std=0.15))
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
            grid_final=None,  # or "zero": end the grid at sigma = 0 (default per grid)
            guidance=1.0,
            sampler_kwargs=None,
        )
    )  # e.g. --config.diffusion.sampler_kwargs="{'fit_iters': 20}"
    c.eval = ml_collections.ConfigDict(dict(num_samples=2000))
    c.train.steps = 2000
    c.train.batch_size = 256
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    c.optimizer.lr = 2e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.ema_decay = 0.995
    if preset in ("gpu", "pod"):
        c.train.batch_size = 4096
        c.model.width = 512
    if preset == "pod":
        c.mesh.data = -1
    return c

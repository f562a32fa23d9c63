"""DiT on ImageNet latents (DiT's recipe: 256px images -> 32x32x4 SD-VAE latents x 0.18215, 1000
classes, label dropout 0.1, CFG). The user encodes the latents beforehand (netlab downloads no
VAE) and writes them once as a tfds dataset (ArrayRecord), read with grain like the image configs:

    python -m netlab.data.tfds_grain from-npz imagenet256_latents train=latents.npz --data_dir D
    python -m netlab.main --config configs/diffusion/imagenet_latent_dit.py:gpu \\
        --workdir runs/in_dit --config.data.tfds_data_dir=D
The .npz holds x (N, 32, 32, 4) float latents and label (N,). `--config.data.source=npz
--config.data.path=latents.npz` reads the .npz directly instead (all of it in memory, draws with
replacement). random_flip is off: DiT flips the images before the VAE, not the latents.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "diffusion.image"
    c.data = ml_collections.ConfigDict(
        dict(
            source="tfds_grain",  # or "npz" (data.path)
            path="",
            name="imagenet256_latents",
            split="train",
            tfds_data_dir="",
            random_flip=False,
            image_key="image",
            label_key="label",
            latent_scale=0.18215,
            image_size=32,
            channels=4,
            num_classes=1000,
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(
            backbone="dit",
            variant="",
            depth=2,
            width=64,
            num_heads=2,
            patch=4,
            label_dropout=0.1,
            learn_logvar=False,
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="linear",
            shift=0.0,
            parameterization="eps",
            weighting="eps",
            time_sampling="uniform",
            p_mean=-1.2,
            p_std=1.2,
            min_snr_gamma=5.0,
            sampler="dpmpp_2m",
            sample_steps=25,
            grid="uniform_logsnr",
            grid_final=None,  # or "zero": end the grid at sigma = 0 (default per grid)
            guidance=1.5,
            sampler_kwargs=None,
        )
    )  # sampler options, a dict literal on the command line
    c.eval = ml_collections.ConfigDict(
        dict(num_samples=20, inception_weights="")
    )  # FID needs decoded RGB
    c.train.steps = 20
    c.train.batch_size = 8
    c.train.eval_every = 20
    c.optimizer.lr = 1e-4
    c.optimizer.ema_decay = 0.9999
    if preset in ("gpu", "pod"):
        c.train.compute_dtype = "bfloat16"
        c.model.variant = "XL/2"
        c.train.steps = 400_000
        c.train.batch_size = 256
        c.train.remat = "dots"
        c.train.eval_every = 50_000
        c.checkpoint.every = 10_000
    if preset == "pod":
        c.train.batch_size = 2048
        c.mesh.data, c.mesh.fsdp = -1, 8
    return c

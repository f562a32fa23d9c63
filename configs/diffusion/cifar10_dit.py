"""Class-conditional DiT on CIFAR-10 from tfds ArrayRecord files read with grain (no TensorFlow).

    tfds build cifar10 --data_dir ~/tensorflow_datasets --file_format=array_record  # once; needs TF
    python -m netlab.main --config configs/diffusion/cifar10_dit.py:gpu --workdir runs/cifar10_dit
    # ADM U-Net instead of the DiT:  --config.model.backbone=unet --config.model.width=128
Needs the `data` extra (tensorflow-datasets, grain, array-record). Batches: one fixed-seed shuffle
per epoch, random horizontal flips, a pure function of (seed, step) (netlab/data/tfds_grain.py).
data.tfds_data_dir="" means $TFDS_DATA_DIR, else ~/tensorflow_datasets. cpu is a smoke-test size.
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
            name="cifar10",
            split="train",
            tfds_data_dir="",
            random_flip=True,
            image_key="image",
            label_key="label",
            path="",
            latent_scale=1.0,
            image_size=32,
            channels=3,
            num_classes=10,
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(
            backbone="dit",  # or "unet": the ADM U-Net below (width, channel_mult, ...)
            variant="",
            depth=4,
            width=128,
            num_heads=4,
            patch=4,
            label_dropout=0.1,
            learn_logvar=False,
            channel_mult=(1, 2, 2),
            num_res_blocks=2,
            attention_resolutions=(16,),
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
            sample_steps=25,
            grid="uniform_logsnr",
            grid_final=None,  # or "zero": end the grid at sigma = 0 (default per grid)
            guidance=1.5,
            sampler_kwargs=None,
        )
    )  # sampler options, a dict literal on the command line
    c.eval = ml_collections.ConfigDict(
        dict(num_samples=100, inception_weights="")
    )  # FID .npz, inception.py
    c.train.steps = 200
    c.train.batch_size = 32
    c.train.eval_every = 200
    c.optimizer.lr = 3e-4
    c.optimizer.warmup_steps = 50
    c.optimizer.clip_norm = 1.0
    c.optimizer.ema_decay = 0.999
    if preset in ("gpu", "pod"):
        c.train.compute_dtype = "bfloat16"
        c.model.variant = "B/2"
        c.train.steps = 200_000
        c.train.batch_size = 256 if preset == "gpu" else 2048
        c.train.eval_every = 10_000
        c.checkpoint.every = 10_000
        c.optimizer.ema_decay = 0.9999
    if preset == "pod":
        c.mesh.data, c.mesh.fsdp = -1, 4
    return c

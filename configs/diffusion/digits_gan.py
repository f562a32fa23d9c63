"""Diffusion-GAN (Wang et al. 2023) on scikit-learn's digits images: a small conv generator and a
timestep-dependent conv discriminator trained through adaptive instance-noise diffusion
(netlab/diffusion/gan_digits_task.py; the objective is netlab/diffusion/diffusion_gan.py's).

    python -m netlab.main --config configs/diffusion/digits_gan.py:cpu --workdir runs/digits_gan
    # eval/digits_fd (one generator call per sample), eval/T; train/d_loss, g_loss, r_d, T

The `model` and `diffusion` groups are digits_dit's (checked by the base digits task, unused by
the GAN); the GAN's own settings are `gan.*`.
"""

import ml_collections

from configs.diffusion import digits_dit

PRESETS = ("cpu", "gpu", "pod")  # not "pipeline": the GAN has no stacked DiT blocks


def get_config(arg=None):
    c = digits_dit.get_config(arg)
    c.task = "diffusion.digits_gan"
    c.gan = ml_collections.ConfigDict(
        dict(
            width=64,  # channels of both conv nets
            z_dim=32,
            t_max=50,  # the largest diffusion length T (static); T starts at t_init
            t_init=10,
            adapt_every=4,  # the authors' T update period (steps)
            adapt_step=1,
            d_target=0.6,  # the paper's target for r_d
            sigma=0.05,  # the authors' noise scale for images
            timestep_sampling="priority",  # priority | uniform
        )
    )
    # GANs: Adam with b1 = 0.5 (as StyleGAN2 / DDGAN), constant lr, no EMA of the networks
    c.optimizer.lr = 2e-4
    c.optimizer.b1 = 0.5
    c.optimizer.schedule = "constant"
    c.optimizer.ema_stds = ()
    c.optimizer.ema_decay = 0.0
    c.optimizer.clip_norm = 0.0
    c.train.steps = 3000
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    return c

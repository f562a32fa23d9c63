"""GANs on scikit-learn's digits images, chosen by `method`:

- diffusion_gan (default): Diffusion-GAN (Wang et al. 2023), a small conv generator and a
  timestep-dependent conv discriminator trained through adaptive instance-noise diffusion
  (netlab/diffusion/gan_digits_task.py; the objective is netlab/diffusion/diffusion_gan.py's);
- ddgan / rdgan: DDGAN's 4-step denoising GAN (Xiao et al. 2022), G(x_t, t, z) -> x0 and
  D(x_{t-1}, x_t, t), with the non-saturating GAN loss or RDGAN's semi-unbalanced OT loss
  (Dao et al. 2024) (netlab/diffusion/ddgan_digits_task.py; the objectives are rdgan.py's).

    python -m netlab.main --config configs/diffusion/digits_gan.py:cpu --workdir runs/digits_gan
    # eval/digits_fd (one generator call per sample), eval/T; train/d_loss, g_loss, r_d, T
    python -m netlab.main --config configs/diffusion/digits_gan.py:method=rdgan \
        --workdir runs/digits_rdgan
    # eval/digits_fd at 4 generator calls (eval/nfe); train/d_loss, g_loss, r1, cost

The `model` and `diffusion` groups are digits_dit's (checked by the base digits task, unused by
the GAN); the GAN's own settings are `gan.*`.
"""

import ml_collections

from configs import common
from configs.diffusion import digits_dit

PRESETS = ("cpu", "gpu", "pod")  # not "pipeline": the GAN has no stacked DiT blocks
METHODS = ("diffusion_gan", "ddgan", "rdgan")
VARIANTS = tuple(f"method={m}" for m in METHODS)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, method="diffusion_gan")
    c = digits_dit.get_config(a.preset)
    c.task = "diffusion.digits_gan" if a.method == "diffusion_gan" else "diffusion.digits_ddgan"
    c.gan = ml_collections.ConfigDict(
        dict(
            method=a.method,  # diffusion_gan | ddgan | rdgan
            width=64,  # channels of both conv nets
            z_dim=32,
            t_max=50,  # the largest diffusion length T (static); T starts at t_init
            t_init=10,
            adapt_every=4,  # the authors' T update period (steps)
            adapt_step=1,
            d_target=0.6,  # the paper's target for r_d
            sigma=0.05,  # the authors' noise scale for images
            timestep_sampling="priority",  # priority | uniform
            # ddgan / rdgan (rdgan.py): DDGAN's T = 4 chain, RDGAN's defaults (softplus both)
            num_steps=4,
            tau=1e-3,
            psi1="softplus",
            psi2="softplus",
            alpha1=1.0,
            alpha2=1.0,
            r1_gamma=0.02,
            lazy_reg=15,  # R1 every 15 steps (the authors' CIFAR-10 setting); 1 = every step
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
    if a.method != "diffusion_gan":
        c.optimizer.b2 = 0.9  # DDGAN / RDGAN: Adam (0.5, 0.9)
        c.optimizer.ema_decay = 0.999  # the authors evaluate an EMA of G (0.9999 on CIFAR-10)
        c.eval.num_samples = 500
        c.train.steps = 6000  # ~30 min on 2 CPU cores with lazy R1 (FD 47.7, NFE 4)
        c.train.eval_every = 1500
        c.checkpoint.every = 1500
    return c

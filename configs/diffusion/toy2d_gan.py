"""GAN-style diffusion training on the 2-D toy mixture: DDO, Diffusion-GAN or RDGAN
(netlab/diffusion/gan_task.py says what each method trains and samples).

python -m netlab.main --config configs/diffusion/toy2d_gan.py:method=ddo --workdir runs/toy2d_ddo
python -m netlab.main --config configs/diffusion/toy2d_gan.py:method=diffusion_gan \
    --workdir runs/toy2d_dgan
python -m netlab.main --config configs/diffusion/toy2d_gan.py:method=rdgan \
    --workdir runs/toy2d_rdgan

DDO fine-tunes: with `gan.pretrain_steps` = P the first P steps train the denoiser with the toy
diffusion loss, then the reference is frozen and DDO runs. To fine-tune a trained
configs/diffusion/toy2d.py run instead (same model.width/depth; init_from sets the parameters,
not the EMA, so evaluate the raw parameters):
    --config.checkpoint.init_from=runs/toy2d --config.gan.pretrain_steps=0 \
    --config.optimizer.ema_decay=0
eval/sliced_wasserstein (and, for DDO, eval/sliced_wasserstein_reference) and
samples/step_<n>.png show the fit. Argument: method=ddo|diffusion_gan|rdgan and a preset.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
METHODS = ("ddo", "diffusion_gan", "rdgan")
VARIANTS = tuple(f"method={m}" for m in METHODS)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, method="ddo")
    c = common.base_config()
    c.task = "diffusion.gan_toy2d"
    # DDO's denoiser (the toy diffusion task's model and diffusion settings)
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
            grid_final=None,
            guidance=1.0,
            sampler_kwargs=None,
        )
    )
    c.gan = ml_collections.ConfigDict(
        dict(
            method=a.method,  # ddo | diffusion_gan | rdgan (any value is checked by the task)
            width=128,  # generator / discriminator MLPs (diffusion_gan, rdgan)
            depth=3,
            z_dim=2,
            # ddo (ddo.py)
            pretrain_steps=1500,  # denoising-loss steps before the reference is frozen
            # sampler steps for the reference samples of each DDO step: at 8 the sampler's own
            # error is most of the first DDO gradient (bench/results/toy2d_gan.md)
            ref_steps=64,
            alpha=1.0,
            beta=0.05,  # small beta tames the one-sample ELBO estimate (ddo.py, test_ddo.py)
            # d: "elbo" (one-sample ELBO difference, log-SNR ~ U[logsnr_min, logsnr_max]) or
            # "training" (the training loss's log-SNR sampling and weight, ddo.py)
            ddo_estimate="elbo",
            logsnr_min=-4.0,
            logsnr_max=6.0,
            # diffusion_gan (diffusion_gan.py)
            t_max=50,
            t_init=10,
            adapt_every=4,
            adapt_step=1,
            d_target=0.6,
            sigma=0.05,
            timestep_sampling="priority",
            # rdgan (rdgan.py)
            num_steps=4,
            tau=1e-3,
            psi1="softplus",
            psi2="softplus",
            alpha1=1.0,
            alpha2=1.0,
            r1_gamma=0.02,
            lazy_reg=1,  # R1 at every step (k > 1: every k-th step, as DDGAN's --lazy_reg)
        )
    )
    c.eval = ml_collections.ConfigDict(dict(num_samples=2000))
    c.train.steps = 2000
    c.train.batch_size = 256
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    c.optimizer.lr = 2e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.ema_decay = 0.995
    if a.method != "ddo":  # GANs: Adam with b1 = 0.5 (as DDGAN / StyleGAN2), no EMA of the MLPs
        c.optimizer.lr = 1e-3
        c.optimizer.b1 = 0.5
        c.optimizer.ema_decay = 0.0
        c.optimizer.schedule = "constant"
    if a.preset in ("gpu", "pod"):
        c.train.batch_size = 4096
        c.model.width = 512
        c.gan.width = 512
    if a.preset == "pod":
        c.mesh.data = -1
    return c

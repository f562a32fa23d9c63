"""Diffusion-GAN on the digits images (task `diffusion.digits_gan`,
configs/diffusion/digits_gan.py).

Wang, Zheng, He, Chen & Zhou, "Diffusion-GAN: Training GANs with Diffusion" (ICLR 2023): the
objective, the adaptive diffusion length T and the timestep sampling are diffusion_gan.py's
(`diffusion_gan.losses`, `adapt_t`; its docstring cites Eq. 1, 3, 5, 6); this file gives them
image networks and the digits task's data and evaluation, as a mixin in front of
`DigitsDiffusion` (the pattern of ddm_task.py):

- the generator G(z) -> 8x8x1 in [-1, 1]: a Dense to a 2x2 map, two (nearest upsample, 3x3 conv,
  SiLU) stages to 8x8, a 3x3 conv and tanh (the digits are scaled to [-1, 1]);
- the timestep-dependent discriminator D(y, t) -> logit: two stride-2 3x3 convs with leaky
  ReLU (8x8 -> 4x4 -> 2x2) on [y, t / t_max] (t as a constant input channel), then a Dense on
  the flattened map and t / t_max again. The authors condition StyleGAN2's discriminator on t
  through its mapping network (as a class label); a small conv net with t as an input is the
  deliberate simplification at 8x8.

Both networks see images flattened to (N, 64) at the library's interface (`diffusion_gan.diffuse`
broadcasts a per-row coefficient over the last axis), reshaped inside. The GAN is unconditional
(as the paper's CIFAR-10 / STL-10 / LSUN runs): `sample` ignores the labels, and the digits
Frechet distance, which compares feature statistics of all samples with the test split, is the
evaluation (`DigitsDiffusion.evaluate`), plus the current T. Training follows the toy task
(gan_task.py): params {generator, discriminator}, model_state `gan_state.big_t` (T, adapted every
`gan.adapt_every` steps from the step's r_d), the loss L_D + L_G with the stop-gradients inside
`diffusion_gan.losses` routing each term to its network, one optimizer for both (gan_task.py says
why that differs from the authors' alternating steps). The `model` and `diffusion` groups of the
config are the digits DiT's, checked by the base task but unused by the GAN. Bad `gan.*` values
are one-line UserErrors when the task is built.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from netlab.diffusion import gan_task
from netlab.diffusion.task import DigitsDiffusion
from netlab.errors import UserError
from netlab.registry import check_choice, check_range

SHAPE = (8, 8, 1)
DIM = 64  # 8 * 8 * 1: the flattened image the library functions see


class ConvGenerator(nn.Module):
    """z -> flattened 8x8x1 image in [-1, 1]."""

    width: int = 64

    @nn.compact
    def __call__(self, z):
        h = nn.Dense(4 * self.width)(z).reshape(z.shape[0], 2, 2, self.width)
        for _ in range(2):  # 2x2 -> 4x4 -> 8x8
            n, s = h.shape[0], 2 * h.shape[1]
            h = jax.image.resize(h, (n, s, s, h.shape[-1]), "nearest")
            h = nn.silu(nn.Conv(self.width, (3, 3))(h))
        return jnp.tanh(nn.Conv(1, (3, 3))(h)).reshape(z.shape[0], DIM)


class ConvDiscriminator(nn.Module):
    """D(y, t) -> logit for flattened 8x8x1 images y and integer timesteps t <= t_max."""

    t_max: int = 50
    width: int = 64

    @nn.compact
    def __call__(self, y, t):
        n = y.shape[0]
        tt = (t / self.t_max).astype(y.dtype)
        h = jnp.concatenate(
            [y.reshape((n,) + SHAPE), jnp.broadcast_to(tt[:, None, None, None], (n,) + SHAPE)], -1
        )
        for _ in range(2):  # 8x8 -> 4x4 -> 2x2
            h = nn.leaky_relu(nn.Conv(self.width, (3, 3), strides=2)(h), 0.2)
        return nn.Dense(1)(jnp.concatenate([h.reshape(n, -1), tt[:, None]], -1))[:, 0]


class _DiffusionGAN(gan_task.StepInBatch):
    """The Diffusion-GAN parts of an image task (a mixin in front of DigitsDiffusion)."""

    def __init__(self, config, policy=None):
        g = config.gan
        if g.get("method", "diffusion_gan") != "diffusion_gan":
            raise UserError(
                f"gan.method={g.method!r}: task diffusion.digits_gan trains 'diffusion_gan' only; "
                f"for ddgan / rdgan use configs/diffusion/digits_gan.py:method={g.method}"
            )
        self.width = check_range("gan.width", int(g.width), 1, integer=True)
        self.z_dim = check_range("gan.z_dim", int(g.z_dim), 1, integer=True)
        self.t_max = check_range("gan.t_max", int(g.t_max), 1, integer=True)
        check_range("gan.t_init", int(g.t_init), 0, self.t_max, integer=True)
        check_range("gan.adapt_every", int(g.adapt_every), 1, integer=True)
        check_range("gan.adapt_step", int(g.adapt_step), 0, integer=True)
        check_range("gan.sigma", float(g.sigma), 0.0)
        check_choice("gan.timestep_sampling", g.timestep_sampling, ("priority", "uniform"))
        super().__init__(config, policy)

    def build_model(self):
        self.generator = ConvGenerator(self.width)
        self.discriminator = ConvDiscriminator(self.t_max, self.width)
        return None

    def init_variables(self, rng):
        kg, kd = jax.random.split(rng)
        f = self.float_dtype
        gen = self.generator.init(kg, jnp.zeros((1, self.z_dim), f))
        disc = self.discriminator.init(kd, jnp.zeros((1, DIM), f), jnp.zeros((1,), jnp.int32))
        big_t = jnp.asarray(int(self.config.gan.t_init), jnp.int32)
        return {
            "params": {"generator": gen["params"], "discriminator": disc["params"]},
            "gan_state": {"big_t": big_t},
        }

    def loss_fn(self, params, model_state, batch, rng, train):
        """L_D + L_G of `diffusion_gan.losses` on the flattened batch; key order: (z, losses)."""
        x = jnp.asarray(batch["x"]).astype(self.float_dtype).reshape(-1, DIM)
        return gan_task.diffusion_gan_loss(self, params, model_state, x, batch["step"], rng)

    @functools.partial(jax.jit, static_argnums=(0, 2))
    def _gan_sample(self, params, n, key):
        z = jax.random.normal(key, (n, self.z_dim), self.float_dtype)
        return self.generator.apply({"params": params["generator"]}, z).reshape((n,) + SHAPE)

    def sample(self, params, n, labels=None, method=None, steps=None, scale=None, seed=0):
        """n samples G(z), one generator call (unconditional: `labels` are ignored)."""
        out = self._gan_sample(params, n, jax.random.key(seed))
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))

    def evaluate(self, params, model_state, step, workdir):
        scalars, images = super().evaluate(params, model_state, step, workdir)
        scalars["T"] = float(model_state["gan_state"]["big_t"])
        return scalars, images


class DiffusionGANDigits(_DiffusionGAN, DigitsDiffusion):
    """Diffusion-GAN on scikit-learn's digits (module docstring)."""

"""DDGAN and RDGAN on the digits images (task `diffusion.digits_ddgan`,
configs/diffusion/digits_gan.py:method=ddgan|rdgan).

DDGAN (Xiao, Kreis & Vahdat, "Tackling the Generative Learning Trilemma with Denoising Diffusion
GANs", ICLR 2022) denoises in T = `gan.num_steps` (4) large steps, each a conditional GAN: a
generator G(x_t, t, z) predicts x0, the step samples DDPM's posterior q(x_{t-1} | x0_pred, x_t),
and a t-conditioned discriminator D(x_{t-1}, x_t, t) tells that fake x_{t-1} from a real one
drawn with the matching x_t. RDGAN (Dao, Ta, Le & Tran, "Robust Diffusion GAN using
Semi-Unbalanced Optimal Transport", ECCV 2024) keeps DDGAN's chain and networks and replaces the
GAN loss by the semi-unbalanced OT terms (the cost tau |x0_pred - x_t|^2 and the conjugates
psi_1*, psi_2*). The chain, the posterior, both objectives and the sampler are rdgan.py's; the
per-row draws, the R1 penalty and the stop-gradients are `gan_task.ddgan_loss`, the code the 2-D
toy task trains (`gan.method`: ddgan = `rdgan.ddgan_losses`, rdgan = the SUOT losses). This file
gives them image networks and the digits task's data and evaluation, as a mixin in front of
`DigitsDiffusion` (the pattern of gan_digits_task.py):

- generator G(x_t, t, z) -> x0_pred in [-1, 1]: a 3x3 conv stem on x_t, three residual
  blocks (SiLU, 3x3 conv) each modulated (scale and shift per channel) by an MLP embedding of
  [one-hot t, z], a 3x3 conv and tanh. The authors' generator is an NCSN++ U-Net with a time
  embedding and z entering through AdaIN-style modulation; at 8x8 a small conv net with the same
  conditioning paths is the deliberate simplification.
- discriminator D(x_{t-1}, x_t, t) -> logit: [x_{t-1}, x_t] as two input channels (the authors
  concatenate them too), two stride-2 3x3 convs with leaky ReLU (8x8 -> 4x4 -> 2x2), each
  shifted per channel by an embedding of one-hot t, then a Dense on the flattened map.

Both networks see images flattened to (N, 64) at the library's interface (rdgan.py and
`ddgan_loss` broadcast per-row coefficients over the last axis), reshaped inside. The GAN is
unconditional (as the paper's CIFAR-10 runs): `sample` ignores the labels; it runs the T-step
chain (`rdgan.sample`, T generator calls) from the unit noise `DigitsDiffusion.sample` draws for
the same seed, and evaluation is the digits Frechet distance (`DigitsDiffusion.evaluate`) plus
`nfe`. One optimizer takes the simultaneous step on L_D + L_G (gan_task.py says why that differs
from the authors' alternating steps). The `model` and `diffusion` groups of the config are the
digits DiT's, checked by the base task but unused. Bad `gan.*` values are one-line UserErrors
when the task is built.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from netlab.diffusion import gan_task, rdgan
from netlab.diffusion.task import DigitsDiffusion
from netlab.registry import check_choice, check_range

SHAPE = (8, 8, 1)
DIM = 64  # 8 * 8 * 1: the flattened image the library functions see
METHODS = ("ddgan", "rdgan")


class PosteriorGenerator(nn.Module):
    """G(x_t, t, z) -> flattened x0 prediction in [-1, 1] (module docstring)."""

    num_steps: int = 4
    width: int = 64
    blocks: int = 3

    @nn.compact
    def __call__(self, x_t, t, z):
        n = x_t.shape[0]
        cond = jnp.concatenate([jax.nn.one_hot(t, self.num_steps + 1, dtype=z.dtype), z], -1)
        emb = nn.silu(nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(cond))))
        h = nn.Conv(self.width, (3, 3))(x_t.reshape((n,) + SHAPE))
        for _ in range(self.blocks):
            scale, shift = jnp.split(nn.Dense(2 * self.width)(emb)[:, None, None, :], 2, -1)
            h = h + nn.Conv(self.width, (3, 3))(nn.silu(h * (1.0 + scale) + shift))
        return jnp.tanh(nn.Conv(1, (3, 3))(nn.silu(h))).reshape(n, DIM)


class PairDiscriminator(nn.Module):
    """D(x_{t-1}, x_t, t) -> logit for flattened 8x8x1 images and integer t in 1..num_steps."""

    num_steps: int = 4
    width: int = 64

    @nn.compact
    def __call__(self, x_prev, t, x_t):
        n = x_prev.shape[0]
        h = jnp.concatenate([x_prev.reshape((n,) + SHAPE), x_t.reshape((n,) + SHAPE)], -1)
        onehot = jax.nn.one_hot(t, self.num_steps + 1, dtype=x_prev.dtype)
        for _ in range(2):  # 8x8 -> 4x4 -> 2x2
            h = nn.Conv(self.width, (3, 3), strides=2)(h)
            h = nn.leaky_relu(h + nn.Dense(self.width)(onehot)[:, None, None, :], 0.2)
        return nn.Dense(1)(jnp.concatenate([h.reshape(n, -1), onehot], -1))[:, 0]


class _DDGAN(gan_task.StepInBatch):
    """The DDGAN / RDGAN parts of an image task (a mixin in front of DigitsDiffusion)."""

    def __init__(self, config, policy=None):
        g = config.gan
        self.method = check_choice("gan.method", g.method, METHODS)
        self.width = check_range("gan.width", int(g.width), 1, integer=True)
        self.z_dim = check_range("gan.z_dim", int(g.z_dim), 1, integer=True)
        self.num_steps = check_range("gan.num_steps", int(g.num_steps), 1, integer=True)
        check_range("gan.r1_gamma", float(g.r1_gamma), 0.0)
        check_range("gan.lazy_reg", int(g.get("lazy_reg", 1)), 1, integer=True)
        if self.method == "rdgan":
            for key in ("psi1", "psi2"):
                check_choice(f"gan.{key}", g[key], tuple(rdgan.PSI_STAR))
            check_range("gan.tau", float(g.tau), 0.0)
            for key in ("alpha1", "alpha2"):
                check_range(f"gan.{key}", float(g[key]), 1e-12)
        self.abar = rdgan.alpha_bars(self.num_steps)
        super().__init__(config, policy)

    def build_model(self):
        self.generator = PosteriorGenerator(self.num_steps, self.width)
        self.discriminator = PairDiscriminator(self.num_steps, self.width)
        return None

    def init_variables(self, rng):
        kg, kd = jax.random.split(rng)
        f = self.float_dtype
        x, t = jnp.zeros((1, DIM), f), jnp.ones((1,), jnp.int32)
        gen = self.generator.init(kg, x, t, jnp.zeros((1, self.z_dim), f))
        disc = self.discriminator.init(kd, x, t, x)
        return {"params": {"generator": gen["params"], "discriminator": disc["params"]}}

    def rd_generator(self, params, x_t, t, z):
        return self.generator.apply({"params": params}, x_t, t, z)

    def rd_discriminator(self, params, x_prev, t, x_t):
        return self.discriminator.apply({"params": params}, x_prev, t, x_t)

    def loss_fn(self, params, model_state, batch, rng, train):
        """`gan_task.ddgan_loss` of `gan.method` on the flattened batch (R1 every
        `gan.lazy_reg` steps)."""
        x = jnp.asarray(batch["x"]).astype(self.float_dtype).reshape(-1, DIM)
        loss, out = gan_task.ddgan_loss(self, params, x, rng, self.method, batch.get("step"))
        return loss, (out, model_state)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _gan_sample(self, params, x_T, key):
        gen = functools.partial(self.rd_generator, params["generator"])
        x = rdgan.sample(
            gen, x_T.reshape(-1, DIM), jnp.asarray(self.abar, x_T.dtype), key, self.z_dim
        )
        return x.reshape(x_T.shape)

    def sample(self, params, n, labels=None, method=None, steps=None, scale=None, seed=0):
        """n samples by the T-step chain (unconditional: `labels` are ignored)."""
        key = jax.random.key(seed)
        x_T = jax.random.normal(jax.random.fold_in(key, 1), (n,) + SHAPE, self.float_dtype)
        out = self._gan_sample(params, x_T, jax.random.fold_in(key, 2))
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))

    def evaluate(self, params, model_state, step, workdir):
        scalars, images = super().evaluate(params, model_state, step, workdir)
        return dict(scalars, nfe=float(self.num_steps)), images


class DDGANDigits(_DDGAN, DigitsDiffusion):
    """DDGAN or RDGAN on scikit-learn's digits (module docstring)."""

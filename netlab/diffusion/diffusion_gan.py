"""Diffusion-GAN (Wang, Zheng, He, Chen & Zhou, ICLR 2023): a GAN trained through instance noise
from a forward diffusion whose length T adapts to the discriminator.

Real and generated samples are both diffused before the discriminator sees them (Sec. 3.1, Eq. 1;
recalled): y ~ q(y | x, t) = N(sqrt(abar_t) x, (1 - abar_t) sigma^2 I), t ~ p_pi over {1..T},
with a linear beta schedule from beta_min = 1e-4 to beta_max = 2e-2 re-discretised over the
current T (the authors' code; sigma = 0.05 there for images, a parameter here), and abar_0 = 1
(t = 0: the clean sample). The discriminator D(y, t) sees the timestep, the min-max objective
(Eq. 3; recalled) is

    V(G, D) = E_{x, t, y ~ q(y | x, t)} [log D(y, t)] + E_{z, t, y_g ~ q(y | G(z), t)}
              [log(1 - D(y_g, t))],

trained here, as the authors' StyleGAN2 code, with logits: L_D = softplus(-l_real) +
softplus(l_fake) and the non-saturating L_G = softplus(-l_fake), the generator's gradient flowing
through the reparameterised y_g = sqrt(abar_t) G(z) + sqrt(1 - abar_t) sigma eps. With T = 0
every t is 0 and both losses are the plain (non-saturating) GAN's.

Adaptive diffusion (Sec. 3.2, Eq. 5; recalled): the overfitting signal r_d = E_{y, t}[sign(
D(y, t) - 1/2)] = E[sign(logit)] on diffused real data, and T <- T + sign(r_d - d_target) C,
clipped to [T_min, T_max]: a discriminator that is too sure of the real data (r_d above the
target, 0.6 in the paper) gets more noise. (The authors' code moves an accumulator p in [0, 1] by
sign(r_d - target) * batch / (500k) and sets T = 10 + round(990 p); same direction.)

Timestep distribution (Eq. 6; recalled): p_pi(t) uniform on {1..T} or "priority" p_pi(t) =
t / sum_{s <= T} s, which favours the noisier steps. T is a traced integer here (at most
`t_max`, static), so adapting it never recompiles.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.registry import check_choice

BETA_MIN, BETA_MAX = 1e-4, 2e-2


def alpha_bar(t, big_t, t_max: int, beta_min=BETA_MIN, beta_max=BETA_MAX):
    """abar_t of the linear beta schedule over {1..T} (T = `big_t`, traced, <= `t_max`);
    abar_0 = 1. Works elementwise on integer arrays t (a masked sum, not a cumsum: lighter to
    compile)."""
    s = jnp.arange(1, t_max + 1)
    frac = (s - 1) / jnp.maximum(big_t - 1, 1)
    log1m_beta = jnp.log1p(-(beta_min + (beta_max - beta_min) * frac))
    t = jnp.asarray(t)
    return jnp.exp(jnp.sum(jnp.where(s <= t[..., None], log1m_beta, 0.0), -1))


def timestep_probs(big_t, t_max: int, kind: str = "priority"):
    """p_pi over {0..t_max}: uniform or proportional to t on {1..T}; all mass on t = 0 at T = 0."""
    check_choice("timestep_sampling", kind, ("priority", "uniform"))
    t = jnp.arange(t_max + 1)
    w = jnp.where((t >= 1) & (t <= big_t), t if kind == "priority" else 1, 0).astype(jnp.float32)
    w = jnp.where(big_t > 0, w, (t == 0).astype(w.dtype))
    return w / w.sum()


def sample_timesteps(key, n: int, big_t, t_max: int, kind: str = "priority"):
    """n draws of t ~ p_pi by inverting the CDF (lighter to compile than `jax.random.choice`)."""
    cdf = jnp.cumsum(timestep_probs(big_t, t_max, kind))
    u = jax.random.uniform(key, (n,)) * cdf[-1]
    return jnp.minimum(jnp.sum(u[:, None] >= cdf[None, :], -1), t_max)


def diffuse(x, t, eps, big_t, t_max: int, sigma=0.05):
    """y = sqrt(abar_t) x + sqrt(1 - abar_t) sigma eps, per row t (Eq. 1)."""
    ab = alpha_bar(t, big_t, t_max)[:, None]
    return jnp.sqrt(ab) * x + jnp.sqrt(1.0 - ab) * sigma * eps


def discriminator_loss(logit_real, logit_fake):
    """-log D(y) - log(1 - D(y_g)) with D = sigmoid(logit), per example."""
    return jax.nn.softplus(-logit_real) + jax.nn.softplus(logit_fake)


def generator_loss(logit_fake):
    """Non-saturating generator loss -log D(y_g), per example."""
    return jax.nn.softplus(-logit_fake)


def overfitting_signal(logit_real):
    """r_d = E[sign(D(y, t) - 1/2)] = E[sign(logit)] on diffused real samples."""
    return jnp.mean(jnp.sign(logit_real))


def adapt_t(big_t, r_d, d_target=0.6, step=1, t_min=0, t_max=1000):
    """T <- clip(T + sign(r_d - d_target) * step, t_min, t_max) (Eq. 5)."""
    return jnp.clip(big_t + jnp.sign(r_d - d_target).astype(jnp.int32) * step, t_min, t_max)


class Generator(nn.Module):
    """z -> x: an MLP (the toy generator)."""

    dim: int = 2
    width: int = 64
    depth: int = 2

    @nn.compact
    def __call__(self, z):
        h = z
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(self.dim)(h)


class Discriminator(nn.Module):
    """D(y, t) -> logit: an MLP on y and the timestep t / t_max."""

    t_max: int = 100
    width: int = 64
    depth: int = 2

    @nn.compact
    def __call__(self, y, t):
        h = jnp.concatenate([y, (t / self.t_max)[:, None].astype(y.dtype)], -1)
        for _ in range(self.depth):
            h = nn.leaky_relu(nn.Dense(self.width)(h), 0.2)
        return nn.Dense(1)(h)[:, 0]


def losses(
    g_apply,
    d_apply,
    g_params,
    d_params,
    x_real,
    z,
    key,
    big_t,
    t_max: int,
    sigma=0.05,
    kind="priority",
):
    """(L_D, L_G, r_d) on one batch: real and generated samples diffused with their own t and
    noise (L_D's generator output is stop-gradient)."""
    k_tr, k_tf, k_er, k_ef = jax.random.split(key, 4)
    n = x_real.shape[0]
    t_r = sample_timesteps(k_tr, n, big_t, t_max, kind)
    t_f = sample_timesteps(k_tf, n, big_t, t_max, kind)
    y_r = diffuse(x_real, t_r, jax.random.normal(k_er, x_real.shape), big_t, t_max, sigma)
    fake = g_apply(g_params, z)
    y_f = diffuse(fake, t_f, jax.random.normal(k_ef, fake.shape), big_t, t_max, sigma)
    l_r = d_apply(d_params, y_r, t_r)
    l_f_d = d_apply(d_params, jax.lax.stop_gradient(y_f), t_f)
    l_f_g = d_apply(jax.lax.stop_gradient(d_params), y_f, t_f)
    return (
        discriminator_loss(l_r, l_f_d).mean(),
        generator_loss(l_f_g).mean(),
        overfitting_signal(l_r),
    )

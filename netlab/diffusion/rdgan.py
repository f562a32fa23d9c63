"""RDGAN / RDUOT (Dao, Ta, Le & Tran, "Robust Diffusion GAN using Semi-Unbalanced Optimal
Transport", ECCV 2024): DDGAN's few-step denoising GAN trained with a semi-unbalanced optimal
transport (SUOT) objective instead of the GAN loss.

DDGAN (Xiao, Kreis & Vahdat, ICLR 2022) denoises in T = 4 large steps. The forward chain is the
VP SDE discretised on t_i = i/T (1 - eps) + eps (beta from 0.1 to 20, eps = 1e-3):
abar_i = exp(-t_i^2 (beta_max - beta_min) / 2 - t_i beta_min), and abar_0 = 1 (the authors
prepend beta = 1e-8 instead). The generator predicts x0 from (x_t, t, z) and the step samples
the DDPM posterior (Ho et al. 2020, Eq. 6-7) q(x_{t-1} | x0_pred, x_t) =
N(sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t)
x_t, beta_t (1 - abar_{t-1}) / (1 - abar_t)), beta_t = 1 - abar_t / abar_{t-1}; the
discriminator D(x_{t-1}, t, x_t) compares the fake x_{t-1} with a real one drawn from
q(x_{t-1} | x0) and the matching x_t ~ q(x_t | x_{t-1}).

SUOT objective (Sec. 3, semi-dual form of the unbalanced OT of Choi et al. 2023 (UOTM);
recalled, and the authors' `train.py`): with the transport cost c(x0_pred, x_t) =
tau |x0_pred - x_t|^2 (summed over features here; the cost compares the prediction with the
generator's input),

    L_D = psi_2*(-D(x_{t-1}^real)) + psi_1*(D(x_{t-1}^fake) - c(x0_pred, x_t)),
    L_G = c(x0_pred, x_t) - D(x_{t-1}^fake),

psi_i* the convex conjugates of the marginal penalties. psi* is one of `PSI_STAR`, written
alpha phi*(s / alpha) with phi*(0) = 0, phi*'(0) = 1 (softplus: 2 softplus(s) - 2 log 2, the
authors' default for both; kl: e^s - 1; chi2: s + s^2 / 4 for s >= -2, -1 below): alpha is the
penalty's weight, and as alpha -> inf (a hard marginal constraint) every psi* tends to the
identity, where L_D = -D(real) + D(fake) - c is the semi-dual (Kantorovich, c-transform) form of
balanced OT (tests/diffusion/test_rdgan.py). The R1 gradient penalty of the authors' D loss is
left to the training loop.

DDGAN's own objective (`ddgan_losses`) is the non-saturating GAN loss with the same R1 penalty:
RDGAN's cost and conjugates are what it changes.

Section and equation numbers above are recalled, not yet checked against the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.registry import check_choice

PSI_STAR = {
    "linear": lambda s: s,
    "softplus": lambda s: 2.0 * (jax.nn.softplus(s) - np.log(2.0)),
    "kl": jnp.expm1,
    "chi2": lambda s: jnp.where(s >= -2.0, s + 0.25 * s**2, -1.0),
}


def psi_star(s, kind="softplus", alpha=1.0):
    """alpha phi*(s / alpha): the conjugate of alpha times the divergence named `kind`."""
    check_choice("psi_star", kind, tuple(PSI_STAR))
    return alpha * PSI_STAR[kind](s / alpha)


def alpha_bars(num_steps=4, beta_min=0.1, beta_max=20.0, eps=1e-3):
    """abar_0 = 1, abar_1..abar_T of DDGAN's discretised VP chain (float64, host)."""
    t = np.arange(1, num_steps + 1) / num_steps * (1.0 - eps) + eps
    return np.concatenate([[1.0], np.exp(-0.5 * t**2 * (beta_max - beta_min) - t * beta_min)])


def posterior(abar, t):
    """(coef of x0, coef of x_t, variance) of q(x_{t-1} | x0, x_t), t >= 1 (may be traced)."""
    abar = jnp.asarray(abar)
    a_t, a_prev = abar[t], abar[t - 1]
    beta = 1.0 - a_t / a_prev
    c0 = jnp.sqrt(a_prev) * beta / (1.0 - a_t)
    ct = jnp.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t)
    return c0, ct, beta * (1.0 - a_prev) / (1.0 - a_t)


def posterior_sample(abar, x0, x_t, t, noise):
    c0, ct, var = posterior(abar, t)
    return c0 * x0 + ct * x_t + jnp.sqrt(var) * noise


def cost(x0_pred, x_t, tau=1e-3):
    """tau |x0_pred - x_t|^2 per example."""
    d = (x0_pred - x_t).reshape(x0_pred.shape[0], -1)
    return tau * jnp.sum(d**2, -1)


def discriminator_loss(d_real, d_fake, c, psi1="softplus", psi2="softplus", alpha1=1.0, alpha2=1.0):
    """Per-example L_D = psi_2*(-D(real)) + psi_1*(D(fake) - c)."""
    return psi_star(-d_real, psi2, alpha2) + psi_star(d_fake - c, psi1, alpha1)


def generator_loss(d_fake, c):
    """Per-example L_G = c - D(fake)."""
    return c - d_fake


def ddgan_losses(d_real, d_fake_d, d_fake_g):
    """Per-example (L_D, L_G) of DDGAN itself (Xiao et al. 2022, Sec. 3-4: the non-saturating
    GAN loss on the denoising step, softplus(-D(real)) + softplus(D(fake)) for D and
    softplus(-D(fake)) for G); `d_fake_d` is D on the stop-gradient fake, `d_fake_g` D (frozen) on
    the fake G is trained through. RDGAN replaces these by the SUOT terms above."""
    return jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake_d), jax.nn.softplus(-d_fake_g)


def sample(generator, x_T, abar, key, z_dim: int):
    """DDGAN sampling: x_{t-1} ~ q(x_{t-1} | G(x_t, t, z), x_t) for t = T..1 (T network calls);
    `generator(x_t, t, z) -> x0_pred` with t an int array per row."""
    n = x_T.shape[0]
    num_steps = len(abar) - 1
    x = x_T
    for t in range(num_steps, 0, -1):
        kz, kn, key = jax.random.split(key, 3)
        tt = jnp.full((n,), t, jnp.int32)
        x0 = generator(x, tt, jax.random.normal(kz, (n, z_dim), x.dtype))
        x = posterior_sample(abar, x0, x, t, jax.random.normal(kn, x.shape, x.dtype))
    return x

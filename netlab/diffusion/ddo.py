"""DDO: direct discriminative optimization (Zheng et al., ICML 2025, "Direct Discriminative
Optimization: Your Likelihood-Based Generative Model is Secretly a GAN Discriminator").

A likelihood model p_theta fine-tuned from a frozen reference p_ref defines the implicit
discriminator d_theta(x) = log p_theta(x) - log p_ref(x) (Sec. 3; recalled), and GAN's
discriminator objective on data against the reference's own samples becomes the fine-tuning loss
(their Eq. 6-7; recalled, practical form with alpha and beta)

    L(theta) = -E_{x ~ p_data} log sigmoid(beta d_theta(x))
               - alpha E_{x ~ p_ref} log(1 - sigmoid(beta d_theta(x))),

whose optimum (alpha = beta = 1) is sigmoid(d*) = p_data / (p_data + p_ref), i.e. p_theta =
p_data: no separate discriminator, no generator through it. At theta = ref, d = 0 and
sigmoid(0) = 1/2, so grad L = -(beta/2) E_data grad log p_theta + (alpha beta/2) E_ref
grad log p_theta, and the second term vanishes (E_p grad log p = grad int p = 0): the first
fine-tuning step follows the maximum-likelihood gradient on the data, and is zero when the data
already are p_ref (tests/diffusion/test_ddo.py checks both on the exact mixture likelihood).

For diffusion models the log-likelihood is replaced by the ELBO with shared (t, eps) for both
models (Sec. 4; recalled): with x_t = alpha x + sigma eps at log-SNR lambda ~ p(lambda),
-log p(x) <= (1/2) E[e^lambda / p(lambda) |D(x_t) - x|^2] + const (Kingma et al. 2021, VDM's
continuous-time loss in data-prediction form), so a one-sample estimate is

    d_theta(x) ~ (1/2) e^lambda / p(lambda) (|D_ref(x_t) - x|^2 - |D_theta(x_t) - x|^2).

The paper's EDM fine-tuning writes the same difference with the model's own training loss
(per-example weight w(lambda) of its objective, lambda drawn as in training, no 1/p(lambda)
importance weight; recalled from secondary summaries of Sec. 4, the paper text was not available
here): `training_log_ratio`. It is not an unbiased log-ratio, but its scale is the training
loss's, and beta (small for images, where log-ratios reach 1e3) then sets how far the sigmoid
saturates.

The reference samples must come from p_ref itself: drawn with a sampler of law q != p_ref
(a few-step ODE solver) the optimum becomes sigmoid(beta d*) = p_data / (p_data + alpha q), i.e.
p_theta = p_ref p_data / (alpha q) at beta = 1, and the first step's gradient gains
(alpha beta / 2) E_q grad log p_theta != 0. On the toy mixture, 8 DPM-Solver++ steps made that
term 95% of the first DDO gradient, 64 steps 12x less (bench/results/toy2d_gan.md).

The authors' self-play rounds (p_ref <- p_theta after each round) are the caller's loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from netlab.diffusion.schedules import alpha_sigma


def loss(d_data, d_ref, alpha=1.0, beta=1.0, w_data=None, w_ref=None):
    """DDO loss from the implicit discriminator's values on data and on reference samples:
    mean softplus(-beta d_data) + alpha mean softplus(beta d_ref); optional per-example weights
    (normalised by the caller: quadrature or importance weights) replace the means."""

    def avg(v, w):
        return jnp.mean(v) if w is None else jnp.sum(w * v)

    return avg(jax.nn.softplus(-beta * d_data), w_data) + alpha * avg(
        jax.nn.softplus(beta * d_ref), w_ref
    )


def error_gap(denoise_theta, denoise_ref, x, logsnr, eps):
    """Per example |D_ref(x_t) - x|^2 - |D_theta(x_t) - x|^2 summed over the last axis (the
    reference's term without gradient), x_t = alpha x + sigma eps at per-example `logsnr`."""
    a, s = alpha_sigma(logsnr[:, None])
    x_t = a * x + s * eps
    err_ref = jnp.sum((denoise_ref(x_t, logsnr[:, None]) - x) ** 2, -1)
    err_theta = jnp.sum((denoise_theta(x_t, logsnr[:, None]) - x) ** 2, -1)
    return jax.lax.stop_gradient(err_ref) - err_theta


def elbo_log_ratio(denoise_theta, denoise_ref, x, logsnr, eps, density):
    """One-sample ELBO estimate of log p_theta(x) - log p_ref(x) per example with shared
    (logsnr, eps) (per-example arrays), `density` = p(logsnr) of the sampled log-SNRs and
    `denoise(x_t, logsnr) -> x0_hat` taking per-example log-SNRs (N, 1)."""
    gap = error_gap(denoise_theta, denoise_ref, x, logsnr, eps)
    return 0.5 * jnp.exp(logsnr) / density * gap


def training_log_ratio(denoise_theta, denoise_ref, x, logsnr, eps, weight):
    """The training-loss form of d per example: weight * (mean-over-dims |D_ref(x_t) - x|^2 -
    mean-over-dims |D_theta(x_t) - x|^2), shared (logsnr, eps), `weight` = w(logsnr) of the
    model's objective per example (module docstring)."""
    gap = error_gap(denoise_theta, denoise_ref, x, logsnr, eps)
    return weight * gap / x.shape[-1]

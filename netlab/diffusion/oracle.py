"""Closed-form denoiser of a Gaussian mixture: the exact model for sampler and loss tests.

x0 ~ sum_k pi_k N(mu_k, diag(s_k^2)). Under x_t = alpha x0 + sigma eps each component stays Gaussian,
p_t = sum_k pi_k N(alpha mu_k, alpha^2 s_k^2 + sigma^2), and
E[x0 | x_t] = sum_k w_k(x_t) (mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k))
with w_k the posterior component probabilities (EDM2's toy example uses the same oracle).
For a single Gaussian the probability-flow ODE is also closed form (VE view, per dimension):
x(sig) = mu + (x(sig0) - mu) sqrt((s^2 + sig^2) / (s^2 + sig0^2)).
"""  # noqa: E501

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    means: np.ndarray  # (K, D)
    stds: np.ndarray  # (K, D)
    weights: np.ndarray  # (K,)

    def sample(self, key, n):
        kc, kx = jax.random.split(key)
        comp = jax.random.choice(kc, len(self.weights), (n,), p=jnp.asarray(self.weights))
        eps = jax.random.normal(kx, (n, self.means.shape[1]))
        return jnp.asarray(self.means)[comp] + jnp.asarray(self.stds)[comp] * eps

    def log_prob(self, x):
        """log p(x) of the mixture for x of shape (N, D) (numpy, float64)."""
        x = np.asarray(x, np.float64)[:, None]
        mu, s = np.asarray(self.means, np.float64), np.asarray(self.stds, np.float64)
        comp = -0.5 * np.sum(((x - mu) / s) ** 2 + np.log(2 * np.pi * s**2), -1)
        comp = comp + np.log(np.asarray(self.weights, np.float64))
        top = comp.max(-1, keepdims=True)
        return (top + np.log(np.exp(comp - top).sum(-1, keepdims=True)))[:, 0]

    def denoise(self, x, logsnr):
        """E[x0 | x_t] for x of shape (N, D) and a scalar log-SNR."""
        alpha = jnp.sqrt(jax.nn.sigmoid(logsnr))
        sigma2 = jax.nn.sigmoid(-logsnr)
        mu = jnp.asarray(self.means, x.dtype)[None]
        s2 = jnp.asarray(self.stds, x.dtype)[None] ** 2
        var = alpha**2 * s2 + sigma2
        diff = x[:, None] - alpha * mu
        logp = -0.5 * jnp.sum(diff**2 / var + jnp.log(var), axis=-1) + jnp.log(
            jnp.asarray(self.weights, x.dtype)
        )
        w = jax.nn.softmax(logp, axis=-1)
        cond = mu + alpha * s2 / var * diff
        return jnp.sum(w[..., None] * cond, axis=1)


def gaussian_ode_solution(x_start, logsnr_start, logsnr_end, mean, std):
    """Exact PF-ODE map of a single Gaussian from log-SNR `start` to `end` (VP coordinates)."""
    a0, a1 = np.sqrt(1 / (1 + np.exp(-logsnr_start))), np.sqrt(1 / (1 + np.exp(-logsnr_end)))
    s0, s1 = np.exp(-0.5 * logsnr_start), np.exp(-0.5 * logsnr_end)
    y0 = np.asarray(x_start, np.float64) / a0
    y1 = mean + (y0 - mean) * np.sqrt((std**2 + s1**2) / (std**2 + s0**2))
    return a1 * y1

"""Cas-DM: an eps-module followed by a cascaded x0-module, so a metric loss can train x0 predictions
without disturbing the noise predictor (Liu et al. 2024, "Bring Metric Functions into Diffusion
Models", arXiv 2401.02414, Sec. 3).

The eps-module predicts eps_hat from x_t; its implied clean image x0_eps = (x_t - sigma eps_hat) /
alpha goes through a stop-gradient into the x0-module, which sees [x_t, sg(x0_eps)] (channel
concatenation) and returns a refined x0_hat. Loss = ||eps_hat - eps||^2 + ||x0_hat - x0||^2 +
metric_weight * metric(x0_hat, x0). Because of the stop-gradient the x0 and metric terms have exactly
zero gradient with respect to the eps-module, which keeps its standard DDPM objective. Sampling (DDIM
in the paper) uses eps_hat for the noise direction and x0_hat for the data estimate.

The metric is pluggable: `image_metrics.ssim_distance` (no weights) by default, or LPIPS with
weights from a user-supplied file (`lpips.py`).
"""  # noqa: E501

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.diffusion import schedules
from netlab.diffusion.image_metrics import ssim_distance


class CasDM(nn.Module):
    """Both modules share the backbone signature `(x, noise_cond, labels) -> output`."""

    eps_module: nn.Module
    x0_module: nn.Module
    stop_gradient: bool = True  # False only to show in tests what the stop-gradient prevents
    x0_clip: Optional[float] = None  # clip x0_eps to [-c, c] (data range): at alpha ~ 0 it explodes

    def __call__(self, x_t, alpha, sigma, noise_cond, labels=None):
        """alpha, sigma broadcastable to x_t (NHWC). Returns (eps_hat, x0_hat)."""
        eps_hat = self.eps_module(x_t, noise_cond, labels)
        x0_eps = (x_t - sigma * eps_hat) / alpha
        if self.x0_clip is not None:
            x0_eps = jnp.clip(x0_eps, -self.x0_clip, self.x0_clip)
        if self.stop_gradient:
            x0_eps = jax.lax.stop_gradient(x0_eps)
        x0_hat = self.x0_module(jnp.concatenate([x_t, x0_eps], axis=-1), noise_cond, labels)
        return eps_hat, x0_hat


def cas_dm_loss(eps_hat, x0_hat, eps, x0, metric=ssim_distance, metric_weight: float = 1.0):
    """Returns (total, parts) with parts = {eps_mse, x0_mse, metric} (float32 means over the batch,
    float64 for float64 data).
    `metric(x0_hat, x0) -> per-example distance`; None drops the metric term."""
    dt = jnp.promote_types(x0.dtype, jnp.float32)  # float64 in float64 runs
    eps_mse = jnp.mean((eps_hat.astype(dt) - eps) ** 2)
    x0_mse = jnp.mean((x0_hat.astype(dt) - x0) ** 2)
    m = jnp.mean(metric(x0_hat.astype(dt), x0)) if metric is not None else jnp.zeros((), dt)
    return eps_mse + x0_mse + metric_weight * m, {"eps_mse": eps_mse, "x0_mse": x0_mse, "metric": m}


def ddim_step(eps_hat, x0_hat, alpha_s, sigma_s):
    """Cas-DM's deterministic DDIM update to the next level s: alpha_s x0_hat + sigma_s eps_hat."""
    return alpha_s * x0_hat + sigma_s * eps_hat


def sample_ddim(model, x, grid):
    """Deterministic DDIM over a log-SNR grid (noisy -> clean) with Cas-DM's pair of predictions:
    `model(x, logsnr) -> (eps_hat, x0_hat)`, each step x_s = alpha_s x0_hat + sigma_s eps_hat, and
    the result is x0_hat at the last grid point."""

    def step(x, pair):
        eps_hat, x0_hat = model(x, pair[0])
        alpha_s, sigma_s = schedules.alpha_sigma(pair[1])
        return ddim_step(eps_hat, x0_hat, alpha_s, sigma_s), None

    x, _ = jax.lax.scan(step, x, (grid[:-1], grid[1:]))
    return model(x, grid[-1])[1]

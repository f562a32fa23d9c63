"""Cas-DM on the digits images (Liu et al. 2024, "Bring Metric Functions into Diffusion Models").

An eps-DiT followed by a cascaded x0-DiT (`cas_dm.CasDM`); the loss is eps-MSE + x0-MSE +
`cas_dm.metric_weight` x metric(x0_hat, x0), with the metric chosen by `cas_dm.metric`: "ssim"
(1 - SSIM, no weights: the default), "lpips" (AlexNet LPIPS from the .npz at `cas_dm.lpips_weights`)
or "none". Sampling is Cas-DM's DDIM (eps_hat for the direction, x0_hat for the data estimate) with
classifier-free guidance on both outputs. Each evaluation reports the digits Frechet distance of
those samples and, for comparison, of DDIM driven by the eps-module alone (`digits_fd_eps_only`):
what the cascaded x0-module adds.

Both modules are `model.backbone` (a DiT by default); the x0-module has `cas_dm.x0_depth` blocks
(0: as many as the eps-module) and sees the two images stacked on the channel axis.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import cas_dm, guidance, image_metrics, lpips, schedules
from netlab.diffusion.task import DigitsDiffusion, _noise_cond
from netlab.errors import UserError
from netlab.registry import check_choice, check_range

METRICS = ("ssim", "lpips", "none")


def metric_fn(cfg):
    check_choice("cas_dm.metric", cfg.metric, METRICS)
    if cfg.metric == "ssim":
        return image_metrics.ssim_distance
    if cfg.metric == "lpips":
        if not cfg.lpips_weights or not os.path.isfile(cfg.lpips_weights):
            raise UserError(
                f"cas_dm.metric='lpips' needs its AlexNet/LPIPS weights: set "
                f"--config.cas_dm.lpips_weights=PATH.npz (see netlab/diffusion/lpips.py); "
                f"got {cfg.lpips_weights!r}"
            )
        return lpips.metric_from_file(cfg.lpips_weights)
    return None


class CasDMDigits(DigitsDiffusion):
    def __init__(self, config, policy=None):
        check_choice("diffusion.sampler", config.diffusion.sampler, ("ddim",))  # Cas-DM's DDIM
        self.metric = metric_fn(config.cas_dm)
        super().__init__(config, policy)

    def build_model(self):
        if self.config.model.get("mlp", "dense") != "dense":
            raise UserError(
                f"model.mlp={self.config.model.mlp!r}: Cas-DM's loss has no auxiliary "
                f"losses; use model.mlp='dense'"
            )
        eps_module = super().build_model()
        depth = check_range("cas_dm.x0_depth", int(self.config.cas_dm.x0_depth), 0, integer=True)
        if depth and not hasattr(eps_module, "depth"):
            raise UserError(f"cas_dm.x0_depth={depth}: model.backbone has no depth; set it to 0")
        x0_module = eps_module.clone(depth=depth) if depth else eps_module.clone()
        return cas_dm.CasDM(eps_module, x0_module, x0_clip=1.0)

    def init_variables(self, rng):
        f = self.float_dtype
        return self.model.init(
            rng,
            jnp.zeros((1, 8, 8, 1), f),
            jnp.ones((1, 1, 1, 1), f),
            jnp.zeros((1, 1, 1, 1), f),
            jnp.zeros((1,), f),
            jnp.zeros((1,), jnp.int32),
        )

    def _pair(self, params, x, logsnr, labels):
        """(eps_hat, x0_hat) at a scalar or per-row log-SNR."""
        logsnr = jnp.broadcast_to(logsnr, (x.shape[0],))
        alpha, sigma = schedules.alpha_sigma(logsnr)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return self.model.apply(
            {"params": params},
            x,
            alpha.reshape(shape),
            sigma.reshape(shape),
            _noise_cond(logsnr),
            labels,
        )

    def loss_fn(self, params, model_state, batch, rng, train):
        x0, x_t, eps, logsnr, labels, _ = self.noised(batch, rng)
        eps_hat, x0_hat = self._pair(params, x_t, logsnr, labels)
        weight = float(self.config.cas_dm.metric_weight)
        loss, parts = cas_dm.cas_dm_loss(eps_hat, x0_hat, eps, x0, self.metric, weight)
        return loss, (parts, model_state)

    @functools.partial(jax.jit, static_argnums=(0, 5))
    def _sample(self, params, x_T, grid, labels, method, scale, key):
        guided = guidance.classifier_free(
            functools.partial(self._pair, params), labels, self.num_classes, scale
        )

        def pair(x, logsnr):
            eps_hat, x0_hat = guided(x, logsnr)
            if method == "eps_only":  # the eps-module alone: x0 implied by eps_hat
                alpha, sigma = schedules.alpha_sigma(logsnr)
                x0_hat = jnp.clip((x - sigma * eps_hat) / alpha, -1.0, 1.0)
            return eps_hat, x0_hat

        return cas_dm.sample_ddim(pair, x_T, grid)

    def evaluate(self, params, model_state, step, workdir):
        """The digits task's evaluation (Cas-DM DDIM samples), plus the eps-module alone."""
        scalars, images = super().evaluate(params, model_state, step, workdir)
        n = int(self.config.eval.num_samples)
        eps_only = self.sample(params, n, np.arange(n) % 10, method="eps_only")
        scalars["digits_fd_eps_only"] = self._features.frechet_distance(
            eps_only, self.data["test_x"]
        )
        return scalars, images

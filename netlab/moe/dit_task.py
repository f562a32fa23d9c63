"""DiT-MoE on the digits: the diffusion package's class-conditional digits task with the DiT
replaced by `netlab.moe.dit_moe.DiTMoE` and the loss extended by α·(expert-level balance loss).
Sampling, evaluation (digits Frechet distance, sample grid) are the diffusion task's; the routing
metrics (load_balance, dropped_fraction, ...) are logged as training metrics."""
import jax
import jax.numpy as jnp

from netlab.diffusion import losses as dlosses
from netlab.diffusion import parameterization, schedules
from netlab.diffusion.task import DigitsDiffusion, _noise_cond
from netlab.moe.dit_moe import DiTMoE
from netlab.moe.task import mean_aux, moe_kwargs


class DiTMoEDigits(DigitsDiffusion):
    def __init__(self, config):
        super().__init__(config)
        m = config.model
        kw = dict(image_size=8, channels=1, num_classes=10, patch=m.patch, width=m.width, depth=m.depth,
                  num_heads=m.num_heads, moe_every=m.moe_every, moe=moe_kwargs(m.moe), dtype=self.dtype)
        self.model = DiTMoE(**kw)                      # evaluation / sampling: eval capacity factor
        self.train_model = DiTMoE(train=True, **kw)

    def loss_fn(self, params, model_state, batch, rng, train):
        d = self.config.diffusion
        x0 = batch["x"]
        n = x0.shape[0]
        k_t, k_eps, k_drop, k_router = jax.random.split(rng, 4)
        logsnr = dlosses.sample_logsnr(k_t, n, self.schedule, d.time_sampling, d.p_mean, d.p_std)
        alpha, sigma = schedules.alpha_sigma(logsnr)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
        eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
        x_t = alpha * x0 + sigma * eps
        labels = jnp.where(jax.random.uniform(k_drop, (n,)) < self.config.model.label_dropout,
                           self.num_classes, batch["label"])
        inp = parameterization.network_input(x_t, alpha, sigma, self.kind)
        model = self.train_model if train else self.model
        out, state = model.apply({"params": params}, inp, _noise_cond(logsnr), labels,
                                 rngs={"router": k_router}, mutable=["moe_aux"])
        x0_hat = parameterization.denoised(x_t, out, alpha, sigma, self.kind)
        loss, mse = dlosses.denoising_loss(x0_hat, x0, logsnr, d.weighting, None, gamma=d.min_snr_gamma)
        aux = [v[0] for _, v in sorted(state["moe_aux"].items())]
        metrics = dict(mean_aux(aux), x0_mse=mse)
        return loss + self.config.loss.load_balance * metrics["load_balance"], (metrics, model_state)

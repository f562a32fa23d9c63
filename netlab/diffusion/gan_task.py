"""GAN-style diffusion training on the 2-D toy mixture: DDO, Diffusion-GAN or RDGAN, chosen by
`gan.method` (task `diffusion.gan_toy2d`, configs/diffusion/toy2d_gan.py).

The methods live in ddo.py, diffusion_gan.py and rdgan.py (their docstrings cite the papers and
equations); this task only wires them to data, parameters and evaluation. Every method keeps all
its trainable networks in the one parameter tree the trainer optimises, and its non-trained state
in `model_state`:

- `ddo` (Zheng et al. 2025): the parameters are the `model.backbone` denoiser's, exactly the
  tree of `diffusion.toy2d`, so `--config.checkpoint.init_from=<a toy2d workdir>` fine-tunes a
  trained model. For steps < `gan.pretrain_steps` the loss is the toy task's denoising loss;
  the frozen reference (model_state `ddo_ref`) follows the parameters up to step
  `gan.pretrain_steps` and is kept from then on, so the first DDO step has theta = ref (its
  loss is (1 + alpha) log 2 exactly); with `gan.pretrain_steps = 0` no pretraining branch is
  compiled. A DDO step draws `batch_size` reference samples with
  `diffusion.sampler` in `gan.ref_steps` steps from the reference (no gradient), one shared
  (log-SNR ~ U[gan.logsnr_min, gan.logsnr_max], eps) per row for both models, and minimises
  `ddo.loss(d(data), d(ref samples), gan.alpha, gan.beta)` with d the ELBO log-ratio
  (`ddo.elbo_log_ratio`). Sampling and evaluation are the toy diffusion task's
  (`diffusion.sampler`, `diffusion.sample_steps`), plus the reference's samples for comparison.
- `diffusion_gan` (Wang et al. 2023): params {generator, discriminator} (diffusion_gan.py's
  MLPs); model_state `gan_state.big_t` is the adaptive diffusion length T, moved by
  `diffusion_gan.adapt_t` every `gan.adapt_every` steps from the step's r_d (the authors' 4).
  Loss = L_D + L_G of `diffusion_gan.losses` (the stop-gradients inside route each term to one
  network). Sampling: one generator call x = G(z).
- `rdgan` (Dao et al. 2024): params {generator G(x_t, t, z) -> x0, discriminator D(x_{t-1}, t,
  x_t)}, MLPs on [inputs, one-hot t]; DDGAN's `gan.num_steps`-step chain (`rdgan.alpha_bars`).
  A row draws t ~ U{1..T}, a real x_{t-1} ~ q(x_{t-1} | x0) and x_t ~ q(x_t | x_{t-1}), the fake
  x_{t-1} ~ q(x_{t-1} | G(x_t, t, z), x_t); loss = mean L_D (with the cost c stop-gradient) +
  mean L_G (discriminator frozen) + (gan.r1_gamma / 2) E|grad_x D(x_{t-1}^real)|^2 (DDGAN's R1
  penalty); the code is `ddgan_loss`, which the digits task (ddgan_digits_task.py) shares, and
  which with `method="ddgan"` is DDGAN's own non-saturating loss instead. Sampling:
  `rdgan.sample`, T generator calls.

Deliberate difference from the authors: their GANs alternate a discriminator step and a
generator step with two optimizers; here one optimizer (`config.optimizer`, one learning rate)
takes the simultaneous step on L_D + L_G from the same parameters (the stop-gradients keep each
loss on its own network; Adam is elementwise, so each network sees its own Adam update, unless
`optimizer.clip_norm`, a global norm, couples them).

The step number reaches `loss_fn` as the replicated batch leaf `step` (the pretraining switch
and the adaptation period read it). Evaluation reports the sliced Wasserstein distance to the
mixture, the samples' NLL under the exact mixture and a scatter picture (DDO: evaluated
parameters are the EMA when `optimizer.ema_decay` > 0, the reference is raw parameters).
Numbers: bench/results/toy2d_gan.md. DDO improves an under-capacity reference there (width 16:
sample NLL 8.01 -> 7.0-7.4, sliced W 0.172 -> 0.160-0.165; the alpha = 0 control does not move),
the paper's premise (mode-covering under limited capacity), and does not improve the well-fit
128-wide model. Measured earlier (bench/ddo_toy_diagnosis.py): with 8-step reference samples 95%
of the first DDO gradient is the few-step sampler's error (the negatives must come from p_ref,
else the optimum is p_ref p_data / q for the sampler's law q), hence `gan.ref_steps` 64.
`gan.ddo_estimate`: "elbo" (`ddo.elbo_log_ratio`) or "training" (`ddo.training_log_ratio`, the
task's own log-SNR sampling and loss weight). Bad values are one-line UserErrors when the task is
built.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from netlab.diffusion import ddo, losses, metrics, rdgan, samplers
from netlab.diffusion import diffusion_gan as dgan
from netlab.diffusion.task import Toy2D, scatter
from netlab.errors import UserError
from netlab.registry import check_choice, check_range

METHODS = ("ddo", "diffusion_gan", "rdgan")


class MLP(nn.Module):
    """[inputs...] -> `out` features: an MLP on the concatenated inputs (RDGAN's toy networks)."""

    out: int
    width: int = 64
    depth: int = 2
    leaky: bool = False

    @nn.compact
    def __call__(self, *inputs):
        h = jnp.concatenate(inputs, -1)
        for _ in range(self.depth):
            h = nn.Dense(self.width)(h)
            h = nn.leaky_relu(h, 0.2) if self.leaky else nn.silu(h)
        return nn.Dense(self.out)(h)


class StepInBatch:
    """Mixin in front of a task: the training step rides in each training batch as the replicated
    leaf `step` (the GAN schedules read it: DDO's pretraining switch, Diffusion-GAN's adaptation
    period, lazy R1)."""

    def batch_axes(self):
        return dict(super().batch_axes(), step=())

    def train_batch(self, step):
        return dict(super().train_batch(step), step=np.int32(step))


class GANToy2D(StepInBatch, Toy2D):
    """The toy mixture trained by `gan.method` (module docstring)."""

    def __init__(self, config, policy=None):
        g = config.gan
        self.method = check_choice("gan.method", g.method, METHODS)
        self.width = check_range("gan.width", int(g.width), 1, integer=True)
        self.depth = check_range("gan.depth", int(g.depth), 0, integer=True)
        self.z_dim = check_range("gan.z_dim", int(g.z_dim), 1, integer=True)
        if self.method == "ddo":
            check_range("gan.pretrain_steps", int(g.pretrain_steps), 0, integer=True)
            check_range("gan.ref_steps", int(g.ref_steps), 1, integer=True)
            check_range("gan.beta", float(g.beta), 1e-12)
            check_range("gan.alpha", float(g.alpha), 0.0)
            check_choice("gan.ddo_estimate", g.get("ddo_estimate", "elbo"), ("elbo", "training"))
            if not float(g.logsnr_min) < float(g.logsnr_max):
                raise UserError(
                    f"gan.logsnr_min={g.logsnr_min}, gan.logsnr_max={g.logsnr_max}: "
                    f"expected logsnr_min < logsnr_max (the DDO log-SNR range)"
                )
        elif self.method == "diffusion_gan":
            self.t_max = check_range("gan.t_max", int(g.t_max), 1, integer=True)
            check_range("gan.t_init", int(g.t_init), 0, self.t_max, integer=True)
            check_range("gan.adapt_every", int(g.adapt_every), 1, integer=True)
            check_choice("gan.timestep_sampling", g.timestep_sampling, ("priority", "uniform"))
        else:
            check_range("gan.num_steps", int(g.num_steps), 1, integer=True)
            for key in ("psi1", "psi2"):
                check_choice(f"gan.{key}", g[key], tuple(rdgan.PSI_STAR))
            check_range("gan.r1_gamma", float(g.r1_gamma), 0.0)
            check_range("gan.lazy_reg", int(g.get("lazy_reg", 1)), 1, integer=True)
            self.abar = rdgan.alpha_bars(int(g.num_steps))
        super().__init__(config, policy)

    def build_model(self):
        if self.method == "ddo":
            return super().build_model()
        if self.method == "diffusion_gan":
            self.generator = dgan.Generator(dim=2, width=self.width, depth=self.depth)
            self.discriminator = dgan.Discriminator(self.t_max, self.width, self.depth)
        else:
            self.generator = MLP(2, self.width, self.depth)
            self.discriminator = MLP(1, self.width, self.depth, leaky=True)
        return None

    # --- protocol -------------------------------------------------------------------------------
    def init_variables(self, rng):
        f = self.float_dtype
        if self.method == "ddo":
            params = super().init_variables(rng)["params"]
            return {"params": params, "ddo_ref": params}
        kg, kd = jax.random.split(rng)
        x, z = jnp.zeros((1, 2), f), jnp.zeros((1, self.z_dim), f)
        if self.method == "diffusion_gan":
            gen = self.generator.init(kg, z)
            disc = self.discriminator.init(kd, x, jnp.zeros((1,), jnp.int32))
            state = {"gan_state": {"big_t": jnp.asarray(int(self.config.gan.t_init), jnp.int32)}}
        else:
            t = jnp.zeros((1, int(self.config.gan.num_steps) + 1), f)
            gen = self.generator.init(kg, x, t, z)
            disc = self.discriminator.init(kd, x, t, x)
            state = {}
        return {"params": {"generator": gen["params"], "discriminator": disc["params"]}, **state}

    def loss_fn(self, params, model_state, batch, rng, train):
        fn = {"ddo": self._ddo, "diffusion_gan": self._diffusion_gan, "rdgan": self._rdgan}
        return fn[self.method](params, model_state, batch, rng, train)

    # --- DDO ------------------------------------------------------------------------------------
    def _denoiser(self, params):
        """denoise(x_t, logsnr (N, 1)) -> x0_hat, as `ddo.elbo_log_ratio` takes it."""
        return lambda x_t, logsnr: self.model_output(params, x_t, logsnr[:, 0], None)[0]

    def ddo_reference_samples(self, ref, n, key):
        """n samples of the reference model by `diffusion.sampler` in `gan.ref_steps` steps."""
        d = self.config.diffusion
        k_x, k_s = jax.random.split(key)
        x_T = jax.random.normal(k_x, (n, 2), self.float_dtype)
        grid = self.sampling_grid(int(self.config.gan.ref_steps))

        def denoise(x, logsnr):
            return self.model_output(ref, x, jnp.full((x.shape[0],), logsnr), None)[0]

        kwargs = self.sampler_kwargs
        out = samplers.sample(denoise, x_T, grid, d.sampler, k_s, schedule=self.schedule, **kwargs)
        return jax.lax.stop_gradient(out)

    def ddo_loss(self, params, ref, x, key):
        """(DDO loss, d on data, d on reference samples) for data rows x; key -> (reference
        samples, log-SNR, eps) in that order of `jax.random.split(key, 3)`."""
        g, dc = self.config.gan, self.config.diffusion
        lo, hi = float(g.logsnr_min), float(g.logsnr_max)
        k_ref, k_lam, k_eps = jax.random.split(key, 3)
        n = x.shape[0]
        both = jnp.concatenate([x, self.ddo_reference_samples(ref, n, k_ref)])
        eps = jax.random.normal(k_eps, both.shape, both.dtype)
        theta, reference = self._denoiser(params), self._denoiser(ref)
        if g.get("ddo_estimate", "elbo") == "training":  # the training loss's lambda and weight
            lam = losses.sample_logsnr(
                k_lam, 2 * n, self.schedule, dc.time_sampling, dc.p_mean, dc.p_std, dtype=both.dtype
            )
            w = losses.weight(lam, dc.weighting, gamma=dc.min_snr_gamma)
            d = ddo.training_log_ratio(theta, reference, both, lam, eps, w)
        else:
            lam = jax.random.uniform(k_lam, (2 * n,), both.dtype, lo, hi)
            d = ddo.elbo_log_ratio(theta, reference, both, lam, eps, 1.0 / (hi - lo))
        return ddo.loss(d[:n], d[n:], float(g.alpha), float(g.beta)), d[:n], d[n:]

    def _ddo(self, params, model_state, batch, rng, train):
        pre = int(self.config.gan.pretrain_steps)
        step = batch["step"]
        ref = jax.tree.map(
            lambda p, r: jnp.where(step <= pre, jax.lax.stop_gradient(p), r),
            params,
            model_state["ddo_ref"],
        )
        x = jnp.asarray(batch["x"]).astype(self.float_dtype)

        def pretrain(params):
            loss, (out, _) = Toy2D.loss_fn(self, params, model_state, batch, rng, train)
            zero = jnp.zeros((), loss.dtype)
            return loss, {"x0_mse": out["x0_mse"], "ddo/d_data": zero, "ddo/d_ref": zero}

        def fine_tune(params):
            loss, d_data, d_ref = self.ddo_loss(params, ref, x, rng)
            zero = jnp.zeros((), loss.dtype)
            return loss, {"x0_mse": zero, "ddo/d_data": d_data.mean(), "ddo/d_ref": d_ref.mean()}

        if pre == 0:  # fine-tuning from the first step (e.g. from checkpoint.init_from)
            loss, out = fine_tune(params)
        else:
            loss, out = jax.lax.cond(step < pre, pretrain, fine_tune, params)
        out["ddo/phase"] = (step >= pre).astype(loss.dtype)
        return loss, (out, dict(model_state, ddo_ref=ref))

    # --- Diffusion-GAN --------------------------------------------------------------------------
    def _diffusion_gan(self, params, model_state, batch, rng, train):
        x = jnp.asarray(batch["x"]).astype(self.float_dtype)
        return diffusion_gan_loss(self, params, model_state, x, batch["step"], rng)

    # --- RDGAN ----------------------------------------------------------------------------------
    def _onehot(self, t):
        return jax.nn.one_hot(t, len(self.abar), dtype=self.float_dtype)

    def rd_generator(self, params, x_t, t, z):
        return self.generator.apply({"params": params}, x_t, self._onehot(t), z)

    def rd_discriminator(self, params, x_prev, t, x_t):
        return self.discriminator.apply({"params": params}, x_prev, self._onehot(t), x_t)[:, 0]

    def _rdgan(self, params, model_state, batch, rng, train):
        x0 = jnp.asarray(batch["x"]).astype(self.float_dtype)
        loss, out = ddgan_loss(self, params, x0, rng, "rdgan", batch.get("step"))
        return loss, (out, model_state)

    # --- sampling and evaluation ----------------------------------------------------------------
    @functools.partial(jax.jit, static_argnums=(0, 2))
    def _gan_sample(self, params, n, key):
        k_x, k_s = jax.random.split(key)
        if self.method == "diffusion_gan":
            z = jax.random.normal(k_x, (n, self.z_dim), self.float_dtype)
            return self.generator.apply({"params": params["generator"]}, z)
        x_T = jax.random.normal(k_x, (n, 2), self.float_dtype)
        gen = functools.partial(self.rd_generator, params["generator"])
        return rdgan.sample(gen, x_T, jnp.asarray(self.abar, x_T.dtype), k_s, self.z_dim)

    def sample(self, params, n, labels=None, method=None, steps=None, scale=None, seed=0):
        """DDO: the diffusion sampler (Toy2D.sample); the GANs: their own few-step samplers."""
        if self.method == "ddo":
            return super().sample(params, n, labels, method, steps, scale, seed)
        out = self._gan_sample(params, n, jax.random.key(seed))
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))

    def evaluate(self, params, model_state, step, workdir):
        scalars, images = super().evaluate(params, model_state, step, workdir)
        if self.method == "ddo":  # the frozen reference, for comparison
            n = int(self.config.eval.num_samples)
            real = np.asarray(self.mixture.sample(jax.random.key(12345), n))
            ref = self.sample(model_state["ddo_ref"], n)
            scalars["sliced_wasserstein_reference"] = metrics.sliced_wasserstein(ref, real)
            scalars["data_nll_reference"] = float(-self.mixture.log_prob(ref).mean())
            images["reference_samples"] = scatter(ref, real)
        elif self.method == "diffusion_gan":
            scalars["T"] = float(model_state["gan_state"]["big_t"])
        return scalars, images


def diffusion_gan_loss(task, params, model_state, x, step, rng):
    """Diffusion-GAN's L_D + L_G (`diffusion_gan.losses`) on data rows x [B, D] with the task's
    generator, discriminator, z_dim, t_max and `config.gan`, and the adaptive T carried in
    model_state["gan_state"] (updated every `gan.adapt_every` steps); key order: (z, losses).
    Shared by the toy task here and the digits task (gan_digits_task.py)."""
    g = task.config.gan
    big_t = model_state["gan_state"]["big_t"]
    k_z, k_loss = jax.random.split(rng)
    z = jax.random.normal(k_z, (x.shape[0], task.z_dim), x.dtype)
    l_d, l_g, r_d = dgan.losses(
        lambda p, z: task.generator.apply({"params": p}, z),
        lambda p, y, t: task.discriminator.apply({"params": p}, y, t),
        params["generator"],
        params["discriminator"],
        x,
        z,
        k_loss,
        big_t,
        task.t_max,
        float(g.sigma),
        g.timestep_sampling,
    )
    adapted = dgan.adapt_t(big_t, r_d, float(g.d_target), int(g.adapt_step), 0, task.t_max)
    new_t = jnp.where(step % int(g.adapt_every) == 0, adapted, big_t)
    out = {"d_loss": l_d, "g_loss": l_g, "r_d": r_d, "T": big_t.astype(l_d.dtype)}
    return l_d + l_g, (out, {"gan_state": {"big_t": new_t.astype(jnp.int32)}})


def ddgan_loss(task, params, x0, rng, method="rdgan", step=None):
    """-> (loss, metrics) of DDGAN's denoising GAN (Xiao et al. 2022, `method="ddgan"`: the
    non-saturating loss, `rdgan.ddgan_losses`) or RDGAN's SUOT version (Dao et al. 2024,
    `"rdgan"`: `rdgan.discriminator_loss` with the cost stop-gradient + `rdgan.generator_loss`)
    on data rows x0 [B, D], plus (gan.r1_gamma / 2) E|grad_x D(x_{t-1}^real)|^2 (DDGAN's R1).
    A row draws t ~ U{1..T}, a real x_{t-1} ~ q(x_{t-1} | x0), x_t ~ q(x_t | x_{t-1}) and the fake
    x_{t-1} ~ q(x_{t-1} | G(x_t, t, z), x_t); key order (t, z, x_{t-1}, x_t, posterior noise).
    The task gives `rd_generator(gp, x_t, t, z)`, `rd_discriminator(dp, x_prev, t, x_t)`, `abar`
    (`rdgan.alpha_bars`), `z_dim` and `config.gan`. Shared by the toy task here and the digits
    task (ddgan_digits_task.py).

    Lazy R1 (DDGAN's `--lazy_reg`, 15 in the authors' CIFAR-10 runs): with `gan.lazy_reg` = k > 1
    and the training `step` given, the penalty, still (gamma / 2) E|grad|^2 and not scaled by k
    (the authors' train_ddgan.py), is computed only when step % k == 0, inside a `lax.cond`, so
    the other steps skip the double backpropagation; with `step=None` it applies at every
    call."""
    g = task.config.gan
    n, dt = x0.shape[0], x0.dtype
    gp, dp = params["generator"], params["discriminator"]
    k_t, k_z, k_1, k_2, k_n = jax.random.split(rng, 5)
    t = jax.random.randint(k_t, (n,), 1, len(task.abar))
    abar = jnp.asarray(task.abar, dt)
    a_t, a_prev = abar[t][:, None], abar[t - 1][:, None]
    beta = 1.0 - a_t / a_prev
    x_prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev) * jax.random.normal(k_1, x0.shape, dt)
    x_t = jnp.sqrt(1.0 - beta) * x_prev + jnp.sqrt(beta) * jax.random.normal(k_2, x0.shape, dt)
    x0_pred = task.rd_generator(gp, x_t, t, jax.random.normal(k_z, (n, task.z_dim), dt))
    c0, ct, var = (v[:, None] for v in rdgan.posterior(abar, t))
    fake = c0 * x0_pred + ct * x_t + jnp.sqrt(var) * jax.random.normal(k_n, x0.shape, dt)

    def d_real_fn(x_prev):
        return task.rd_discriminator(dp, x_prev, t, x_t)

    def with_r1(x_prev):
        d_real, d_real_vjp = jax.vjp(d_real_fn, x_prev)
        return d_real, d_real_vjp(jnp.ones_like(d_real))[0]

    def without_r1(x_prev):
        return d_real_fn(x_prev), jnp.zeros_like(x_prev)

    gamma, lazy = float(g.r1_gamma), int(g.get("lazy_reg", 1))
    if not gamma:
        d_real, grad_real = without_r1(x_prev)
    elif lazy > 1 and step is not None:
        d_real, grad_real = jax.lax.cond(step % lazy == 0, with_r1, without_r1, x_prev)
    else:
        d_real, grad_real = with_r1(x_prev)
    d_fake = task.rd_discriminator(dp, jax.lax.stop_gradient(fake), t, x_t)
    d_fake_g = task.rd_discriminator(jax.lax.stop_gradient(dp), fake, t, x_t)
    out = {}
    if method == "rdgan":
        cost = rdgan.cost(x0_pred, x_t, float(g.tau))
        l_d = rdgan.discriminator_loss(
            d_real, d_fake, jax.lax.stop_gradient(cost), g.psi1, g.psi2, g.alpha1, g.alpha2
        )
        l_g = rdgan.generator_loss(d_fake_g, cost)
        out["cost"] = cost.mean()
    else:
        l_d, l_g = rdgan.ddgan_losses(d_real, d_fake, d_fake_g)
    r1 = 0.5 * gamma * jnp.mean(jnp.sum(grad_real**2, -1))
    out.update(d_loss=l_d.mean(), g_loss=l_g.mean(), r1=r1)
    return l_d.mean() + l_g.mean() + r1, out

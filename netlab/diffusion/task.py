"""Diffusion training tasks: the digits images with a DiT, and a 2-D Gaussian mixture with an MLP.

The loss (float32 throughout): draw log-SNR by `config.diffusion.time_sampling`, noise x0 to
x_t = alpha x0 + sigma eps at the global batch shape inside jit (every row gets its own noise), drop
labels to the null class with probability `model.label_dropout`, map the network output to x0_hat
by `diffusion.parameterization`, and weight the x0 error by `diffusion.weighting` (losses.py).
Evaluation samples with `diffusion.sampler` over a host-built float64 grid of `sample_steps`
intervals, with classifier-free guidance `diffusion.guidance`, and reports the digits Frechet
distance (or sliced Wasserstein for 2-D data) and a picture of the samples.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from netlab.data import digits
from netlab.diffusion import guidance, losses, metrics, parameterization, samplers, schedules
from netlab.diffusion.dit import DiT, preset
from netlab.diffusion.mlp import MlpDenoiser
from netlab.diffusion.oracle import GaussianMixture
from netlab.train import precision


def _noise_cond(logsnr):
    """Network conditioning on the noise level: EDM's c_noise = ln(sigma_ve)/4 = -logsnr/8, scaled
    so the sinusoidal embedding's frequencies resolve it."""
    return -logsnr / 8.0 * 100.0


class _DiffusionTask:
    num_classes = 0

    def __init__(self, config):
        self.config = config
        d = config.diffusion
        self.schedule = schedules.Schedule(d.schedule, shift=float(d.shift))
        self.kind = d.parameterization
        if self.kind not in parameterization.PARAMETERIZATIONS:
            raise ValueError(f"diffusion.parameterization={self.kind!r}; choose one of "
                             f"{', '.join(parameterization.PARAMETERIZATIONS)}")
        losses.weight(jnp.zeros(()), d.weighting)          # validates the name
        samplers.get(d.sampler)
        if d.sample_steps < 1:
            raise ValueError(f"diffusion.sample_steps={d.sample_steps}: NFE must be >= 1")
        self.batch_size = int(config.train.batch_size)
        self.dtype = precision.compute_dtype(config.train)
        self.remat = precision.remat_policy(config.train.remat)

    # --- protocol -------------------------------------------------------------------------------
    def global_batch_size(self):
        return self.batch_size

    def apply_model(self, params, inp, noise_cond, labels, rng, train):
        """-> (raw network output, EDM2 log-variance or None, extra metrics, extra loss).
        Subclasses with auxiliary losses (DiT-MoE's balance loss) override only this."""
        out = self.model.apply({"params": params}, inp, noise_cond, labels)
        out, logvar = out if isinstance(out, tuple) else (out, None)
        return out, logvar, {}, 0.0

    def model_output(self, params, x_t, logsnr, labels, rng=None, train=False):
        """-> (x0_hat, logvar, extra metrics, extra loss) for noisy x_t at per-example log-SNR."""
        alpha, sigma = schedules.alpha_sigma(logsnr)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
        inp = parameterization.network_input(x_t, alpha, sigma, self.kind)
        rng = jax.random.key(0) if rng is None else rng
        out, logvar, metrics, extra = self.apply_model(params, inp, _noise_cond(logsnr), labels, rng, train)
        return parameterization.denoised(x_t, out, alpha, sigma, self.kind), logvar, metrics, extra

    def noised(self, batch, rng):
        """-> (x0, x_t, eps, logsnr, labels, model rng): per-row log-SNR drawn by
        `diffusion.time_sampling`, x_t = alpha x0 + sigma eps, labels dropped to the null class with
        probability `model.label_dropout` (classifier-free guidance training)."""
        d = self.config.diffusion
        x0 = batch["x"]
        n = x0.shape[0]
        k_t, k_eps, k_drop, k_model = jax.random.split(rng, 4)
        logsnr = losses.sample_logsnr(k_t, n, self.schedule, d.time_sampling, d.p_mean, d.p_std)
        alpha, sigma = schedules.alpha_sigma(logsnr)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
        x_t = alpha.reshape(shape) * x0 + sigma.reshape(shape) * eps
        labels = batch.get("label")
        if labels is not None and self.num_classes:
            drop = jax.random.uniform(k_drop, (n,)) < self.config.model.label_dropout
            labels = jnp.where(drop, self.num_classes, labels)
        return x0, x_t, eps, logsnr, labels, k_model

    def loss_fn(self, params, model_state, batch, rng, train):
        d = self.config.diffusion
        x0, x_t, _, logsnr, labels, k_model = self.noised(batch, rng)
        x0_hat, logvar, metrics, extra = self.model_output(params, x_t, logsnr, labels, k_model, train)
        loss, mse = losses.denoising_loss(x0_hat, x0, logsnr, d.weighting, logvar, gamma=d.min_snr_gamma)
        return loss + extra, (dict(metrics, x0_mse=mse), model_state)

    # --- sampling -------------------------------------------------------------------------------
    def sampling_grid(self, steps=None, kind=None):
        d = self.config.diffusion
        return jnp.asarray(schedules.sampling_grid(self.schedule, steps or d.sample_steps, kind or d.grid),
                           jnp.float32)

    @functools.partial(jax.jit, static_argnums=(0, 5))
    def _sample(self, params, x_T, grid, labels, method, scale, key):
        def model(x, logsnr, lab):
            return self.model_output(params, x, jnp.full((x.shape[0],), logsnr), lab)[0]

        if self.num_classes:
            denoise = guidance.classifier_free(model, labels, self.num_classes, scale)
        else:
            denoise = lambda x, logsnr: model(x, logsnr, None)
        return samplers.sample(denoise, x_T, grid, method, key=key)

    def sample(self, params, n, labels=None, method=None, steps=None, scale=None, seed=0):
        d = self.config.diffusion
        key = jax.random.key(seed)
        x_T = jax.random.normal(jax.random.fold_in(key, 1), (n,) + self.data_shape)
        labels = jnp.zeros((n,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
        scale = jnp.float32(d.guidance if scale is None else scale)
        out = self._sample(params, x_T, self.sampling_grid(steps), labels, method or d.sampler, scale, key)
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))


def dit_sizes(m) -> dict:
    """DiT depth/width/heads/patch from `model.variant` ("S/2", "B/4", ...) or the explicit fields."""
    return preset(m.variant) if m.variant else dict(depth=m.depth, width=m.width, num_heads=m.num_heads,
                                                    patch=m.patch)


class DigitsDiffusion(_DiffusionTask):
    """Class-conditional DiT on scikit-learn's digits (8x8 grey images in [-1, 1])."""
    num_classes = 10
    data_shape = (8, 8, 1)

    def __init__(self, config):
        super().__init__(config)
        m = config.model
        self.model = DiT(image_size=8, channels=1, num_classes=10, learn_logvar=m.learn_logvar,
                         dtype=self.dtype, remat_policy=self.remat, **dit_sizes(m))
        self.model.setup_check()
        self.data = digits.load()
        self._features = None

    def init_variables(self, rng):
        return self.model.init(rng, jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))

    def batch_axes(self):
        return {"x": ("batch", None, None, None), "label": ("batch",)}

    def train_batch(self, step, process_index, process_count):
        idx = digits.epoch_batch_indices(len(self.data["train_y"]), self.batch_size, self.config.seed, step)
        idx = digits.process_rows(idx, process_index, process_count)
        return {"x": self.data["train_x"][idx], "label": self.data["train_y"][idx]}

    def evaluate(self, params, model_state, step, workdir):
        n = int(self.config.eval.num_samples)
        labels = np.arange(n) % 10
        samples = self.sample(params, n, labels)
        if self._features is None:
            self._features = metrics.DigitsFeatures(workdir)
        real = self.data["test_x"]
        fd = self._features.frechet_distance(samples, real)
        # The floor a perfect model would reach with this many samples: real training images vs test.
        floor = self._features.frechet_distance(self.data["train_x"][:n], real)
        return {"digits_fd": fd, "digits_fd_real_floor": floor}, {"samples": image_grid(samples[:100], 10)}


class Toy2D(_DiffusionTask):
    """A 2-D Gaussian mixture (8 modes on a circle) with an MLP denoiser."""
    data_shape = (2,)

    def __init__(self, config):
        super().__init__(config)
        m = config.model
        angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        self.mixture = GaussianMixture(np.stack([2 * np.cos(angles), 2 * np.sin(angles)], 1),
                                       np.full((8, 2), float(config.data.mode_std)), np.full(8, 1 / 8))
        self.model = MlpDenoiser(dim=2, width=m.width, depth=m.depth, dtype=self.dtype)

    def init_variables(self, rng):
        return self.model.init(rng, jnp.zeros((1, 2)), jnp.zeros((1,)))

    def batch_axes(self):
        return {"x": ("batch", None)}

    def train_batch(self, step, process_index, process_count):
        # Data randomness must not come from the trainer's stream fold_in(key(seed), step): with
        # partitionable threefry, split(k, 2)[1] == split(k, 3)[1], so the data noise would equal the
        # diffusion noise and the model would learn to read it back.
        rng = np.random.default_rng([self.config.seed, step, 0xDA7A])
        comp = rng.choice(len(self.mixture.weights), self.batch_size, p=self.mixture.weights)
        x = (self.mixture.means[comp] + self.mixture.stds[comp] * rng.standard_normal((self.batch_size, 2)))
        x = x.astype(np.float32)
        return {"x": x[digits.process_rows(np.arange(self.batch_size), process_index, process_count)]}

    def evaluate(self, params, model_state, step, workdir):
        n = int(self.config.eval.num_samples)
        samples = self.sample(params, n)
        real = np.asarray(self.mixture.sample(jax.random.key(12345), n))
        return {"sliced_wasserstein": metrics.sliced_wasserstein(samples, real)}, {"samples": scatter(samples, real)}


def image_grid(images, cols: int, upscale: int = 4) -> np.ndarray:
    """(N, H, W, 1) in [-1, 1] -> one uint8 picture, `cols` images per row."""
    imgs = np.clip((np.asarray(images)[..., 0] + 1) * 127.5, 0, 255).astype(np.uint8)
    n, h, w = imgs.shape
    rows = -(-n // cols)
    canvas = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = img
    return np.kron(canvas, np.ones((upscale, upscale), np.uint8))


def scatter(samples, real, size: int = 256, extent: float = 3.5) -> np.ndarray:
    """Samples (black) over real data (grey) as a uint8 picture, without a plotting library."""
    img = np.full((size, size), 255, np.uint8)
    for pts, value in ((real, 170), (samples, 0)):
        ij = np.clip(((np.asarray(pts) + extent) / (2 * extent) * (size - 1)).astype(int), 0, size - 1)
        img[size - 1 - ij[:, 1], ij[:, 0]] = value
    return img

"""Diffusion training tasks: the digits images with a DiT, and a 2-D Gaussian mixture with an MLP.

The loss (float32, float64 in float64 runs): draw log-SNR by `diffusion.time_sampling`, noise x0
to x_t = alpha x0 + sigma eps at the global batch shape inside jit (every row gets its own noise),
drop labels to the null class with probability `model.label_dropout`, map the network output to
x0_hat by `diffusion.parameterization`, and weight the x0 error by `diffusion.weighting`
(losses.py). Auxiliary losses that the network sows (an MoE MLP's load balance, `netlab.nn.aux`)
are added and logged as `aux/<name>`. A backbone that supervises its lower-resolution branches
sows their predictions (`losses.BRANCHES`, DiMR); each adds its weighted loss against the
box-downsampled target (`losses.branch_loss`, logged as `branch/<name>`).
`diffusion.error_prop_weight` > 0 adds the error-propagation regulariser (error_propagation.py,
logged as `error_prop`). Evaluation samples with `diffusion.sampler` (options from
`diffusion.sampler_kwargs`) over a host-built float64 grid of `sample_steps` intervals
(`diffusion.grid`, ending at sigma = 0 with `diffusion.grid_final="zero"`) cast to the samples'
dtype, with classifier-free guidance `diffusion.guidance`, and reports the digits Frechet
distance (or sliced Wasserstein for 2-D data) and a picture of the samples.

The network is `model.backbone` (`registries.BACKBONES`: dit, unet, mlp, or `module:builder`),
built with the trainer's precision policy (compute dtype, `train.remat`). A Transformer backbone
takes its MLP from `model.mlp` (`netlab.nn.registries.MLPS`, default "dense"): any other name puts
`MLPS[model.mlp](dtype=..., **model.mlp_kwargs)` in every `model.mlp_every`-th block (DiT-MoE).
Every bad value is a one-line UserError when the task is built.
"""

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from netlab.data import digits
from netlab.diffusion import (
    error_propagation,
    guidance,
    losses,
    metrics,
    parameterization,
    samplers,
    schedules,
    simple_diffusion,
)
from netlab.diffusion.oracle import GaussianMixture
from netlab.diffusion.registries import (
    BACKBONES,
    GRIDS,
    PARAMETERIZATIONS,
    TIME_SAMPLINGS,
    WEIGHTINGS,
)
from netlab.errors import UserError
from netlab.nn import aux, precision
from netlab.nn.registries import MLPS
from netlab.registry import check_choice, check_range


def _noise_cond(logsnr):
    """Network conditioning on the noise level: EDM's c_noise = ln(sigma_ve)/4 = -logsnr/8, scaled
    so the sinusoidal embedding's frequencies resolve it."""
    return -logsnr / 8.0 * 100.0


def _as_dict(value) -> dict:
    value = value or {}
    return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def sparse_mlp(m, policy):
    """The MLP factory named by `model.mlp` with `model.mlp_kwargs`, or None for "dense"."""
    name = m.get("mlp", "dense")
    cls = MLPS.get(name, key="model.mlp")
    kwargs = _as_dict(m.get("mlp_kwargs", {}))
    if name == "dense":
        if kwargs:
            raise UserError(
                f"model.mlp_kwargs={kwargs}: only for a sparse model.mlp (e.g. 'moe'); "
                f"the dense MLP is 4 x model.width wide"
            )
        return None
    fields = None
    if dataclasses.is_dataclass(cls):
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
        for key in kwargs:
            if key not in fields:
                raise UserError(
                    f"model.mlp_kwargs.{key}: not a field of model.mlp={name!r}; "
                    f"choose from {', '.join(fields)}"
                )
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in ("parent", "name")
        ]
        if missing:
            raise UserError(
                f"model.mlp={name!r} needs model.mlp_kwargs.{missing[0]} (and "
                f"{', '.join(missing[1:]) or 'no other'}); see configs/moe/"
            )
    if fields is None or "dtype" in fields:
        kwargs.setdefault("dtype", policy.compute_dtype)
    return functools.partial(cls, **kwargs)


def build_backbone(m, data_shape, num_classes, policy, default="dit"):
    """`model.backbone` (else `default`) built for `data_shape` with the policy and the
    `model.mlp` factory."""
    name = m.get("backbone", default)
    builder = BACKBONES.get(name)
    mlp = sparse_mlp(m, policy)
    kwargs = {}
    if mlp is not None:
        if "sparse_mlp" not in inspect.signature(builder).parameters:
            raise UserError(
                f"model.mlp={m.get('mlp')!r}: model.backbone={name!r} has no "
                f"Transformer MLP to replace; use model.backbone='dit' or "
                f"model.mlp='dense'"
            )
        kwargs["sparse_mlp"] = mlp
    model = builder(
        m, data_shape=tuple(data_shape), num_classes=num_classes, policy=policy, **kwargs
    )
    if policy.remat != "none" and getattr(model, "remat_policy", None) is None:
        raise UserError(
            f"train.remat={policy.remat!r}: model.backbone={name!r} does not "
            f"rematerialise; set train.remat='none'"
        )
    return model


class _DiffusionTask:
    num_classes = 0
    data_shape: tuple = ()
    default_backbone = "dit"

    def __init__(self, config, policy=None):
        self.config = config
        self.policy = policy or precision.from_config(config.train)
        self.float_dtype = self.policy.float_dtype
        d = config.diffusion
        self.schedule = schedules.Schedule(d.schedule, shift=float(d.shift))
        self.kind = d.parameterization
        PARAMETERIZATIONS.get(self.kind)
        WEIGHTINGS.get(d.weighting)
        TIME_SAMPLINGS.get(d.time_sampling)
        GRIDS.get(d.grid)
        if d.get("grid_final") is not None:
            check_choice("diffusion.grid_final", d.grid_final, schedules.FINALS)
        check_range("diffusion.sample_steps", d.sample_steps, 1, integer=True)
        self.sampler_kwargs = _as_dict(d.get("sampler_kwargs", {}))
        samplers.check(
            d.sampler,
            self.sampler_kwargs,
            self.data_shape,
            int(d.sample_steps),
            dtype=self.float_dtype,
        )
        self.batch_size = int(config.train.batch_size)
        # simple diffusion's multiscale loss (simple_diffusion.py); () is the plain loss
        self.multiscale = simple_diffusion.check_scales(d.get("multiscale"), self.data_shape)
        # the error-propagation regulariser (error_propagation.py); weight 0: not computed
        self.error_prop_weight = check_range(
            "diffusion.error_prop_weight", float(d.get("error_prop_weight", 0.0)), 0.0
        )
        self.error_prop_gap = check_range(
            "diffusion.error_prop_gap", int(d.get("error_prop_gap", 5)), 1, integer=True
        )
        self.model = self.build_model()

    def build_model(self):
        return build_backbone(
            self.config.model, self.data_shape, self.num_classes, self.policy, self.default_backbone
        )

    # --- protocol -------------------------------------------------------------------------------
    def global_batch_size(self):
        return self.batch_size

    def _apply(self, params, x_t, logsnr, labels, rng=None, train=None):
        """-> (x0_hat, logvar or None, aux collections) for noisy x_t at per-example log-SNR.
        `train=None` (sampling) applies the network without its auxiliary collections."""
        alpha, sigma = schedules.alpha_sigma(logsnr)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
        inp = parameterization.network_input(x_t, alpha, sigma, self.kind)
        args = ({"params": params}, inp, _noise_cond(logsnr), labels)
        if train is None:
            out, cols = self.model.apply(*args), {}
        else:
            rng = jax.random.key(0) if rng is None else rng
            rngs = dict(zip(("dropout", "router"), jax.random.split(rng)))
            mutable = aux.COLLECTIONS + (losses.BRANCHES,)
            out, cols = self.model.apply(*args, train, rngs=rngs, mutable=mutable)
        out, logvar = out if isinstance(out, tuple) else (out, None)
        return parameterization.denoised(x_t, out, alpha, sigma, self.kind), logvar, cols

    def model_output(self, params, x_t, logsnr, labels):
        """-> (x0_hat, EDM2 log-variance or None) for noisy x_t at per-example log-SNR."""
        return self._apply(params, x_t, logsnr, labels)[:2]

    def noised(self, batch, rng):
        """-> (x0, x_t, eps, logsnr, labels, model rng): per-row log-SNR drawn by
        `diffusion.time_sampling`, x_t = alpha x0 + sigma eps, labels dropped to the null class with
        probability `model.label_dropout` (classifier-free guidance training)."""
        d = self.config.diffusion
        x0 = jnp.asarray(batch["x"]).astype(self.float_dtype)
        n = x0.shape[0]
        k_t, k_eps, k_drop, k_model = jax.random.split(rng, 4)
        logsnr = losses.sample_logsnr(
            k_t, n, self.schedule, d.time_sampling, d.p_mean, d.p_std, dtype=self.float_dtype
        )
        alpha, sigma = schedules.alpha_sigma(logsnr)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        x_t = alpha.reshape(shape) * x0 + sigma.reshape(shape) * eps
        labels = batch.get("label")
        if labels is not None and self.num_classes:
            drop = jax.random.uniform(k_drop, (n,)) < self.config.model.label_dropout
            labels = jnp.where(drop, self.num_classes, labels)
        return x0, x_t, eps, logsnr, labels, k_model

    def loss_fn(self, params, model_state, batch, rng, train):
        d = self.config.diffusion
        x0, x_t, _, logsnr, labels, k_model = self.noised(batch, rng)
        x0_hat, logvar, cols = self._apply(params, x_t, logsnr, labels, k_model, bool(train))
        if self.multiscale:
            loss, mse = simple_diffusion.multiscale_loss(
                x0_hat, x0, logsnr, self.multiscale, d.weighting, logvar, gamma=d.min_snr_gamma
            )
        else:
            loss, mse = losses.denoising_loss(
                x0_hat, x0, logsnr, d.weighting, logvar, gamma=d.min_snr_gamma
            )
        out = {"x0_mse": mse}
        for name, branch in losses.branches(cols).items():  # DiMR's per-branch supervision
            term, _ = losses.branch_loss(
                branch["out"], x0, x_t, logsnr, self.kind, d.weighting, gamma=d.min_snr_gamma
            )
            loss, out[f"branch/{name}"] = loss + branch["weight"].astype(loss.dtype) * term, term
        if self.error_prop_weight:
            reg = self.error_prop_term(params, x0, labels, rng, k_model, train)
            loss, out["error_prop"] = loss + self.error_prop_weight * reg.astype(loss.dtype), reg
        out.update({f"aux/{k}": v for k, v in aux.loss_terms(cols).items()})
        for k, v in aux.mean_metrics(cols).items():
            out.setdefault(f"aux/{k}", v)
        return loss + aux.total_loss(cols).astype(loss.dtype), (out, model_state)

    def error_prop_term(self, params, x0, labels, rng, k_model, train):
        """The bootstrapped cumulative-error estimate (error_propagation.py) of this batch: the
        first half's DDPM chain (their labels, the model in training mode, its auxiliary
        collections dropped) against the second half noised directly."""
        half = x0.shape[0] // 2
        lab = None if labels is None else labels[:half]

        def denoise(x, lam):
            lam = jnp.full((x.shape[0],), lam, x.dtype)
            return self._apply(params, x, lam, lab, k_model, bool(train))[0].astype(x.dtype)

        key = jax.random.fold_in(rng, 0xE7)  # a stream the plain loss does not use
        reg, _, _ = error_propagation.regulariser(
            denoise, x0, key, self.schedule, self.error_prop_gap
        )
        return reg

    # --- sampling -------------------------------------------------------------------------------
    def sampling_grid(self, steps=None, kind=None, dtype=None):
        """The host float64 grid in the dtype the samples are drawn in (float_dtype), or `dtype`:
        the samplers compute in their input's dtype."""
        d = self.config.diffusion
        grid = schedules.sampling_grid(
            self.schedule, steps or d.sample_steps, kind or d.grid, final=d.get("grid_final")
        )
        return jnp.asarray(grid, dtype or self.float_dtype)

    @functools.partial(jax.jit, static_argnums=(0, 5))
    def _sample(self, params, x_T, grid, labels, method, scale, key):
        def model(x, logsnr, lab):
            return self.model_output(params, x, jnp.full((x.shape[0],), logsnr), lab)[0]

        if self.num_classes:
            denoise = guidance.classifier_free(model, labels, self.num_classes, scale)
        else:
            denoise = lambda x, logsnr: model(x, logsnr, None)  # noqa: E731
        kwargs = self.sampler_kwargs if method == self.config.diffusion.sampler else {}
        return samplers.sample(
            denoise, x_T, grid, method, key=key, schedule=self.schedule, **kwargs
        )

    def sample(self, params, n, labels=None, method=None, steps=None, scale=None, seed=0):
        d = self.config.diffusion
        key = jax.random.key(seed)
        x_T = jax.random.normal(
            jax.random.fold_in(key, 1), (n,) + self.data_shape, self.float_dtype
        )
        labels = jnp.zeros((n,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
        scale = jnp.asarray(d.guidance if scale is None else scale, self.float_dtype)
        grid = self.sampling_grid(steps, dtype=x_T.dtype)
        out = self._sample(params, x_T, grid, labels, method or d.sampler, scale, key)
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))


class DigitsDiffusion(_DiffusionTask):
    """Class-conditional DiT on scikit-learn's digits (8x8 grey images in [-1, 1])."""

    num_classes = 10
    data_shape = (8, 8, 1)

    def __init__(self, config, policy=None):
        super().__init__(config, policy)
        self.data = digits.load()
        self._features = None

    def init_variables(self, rng):
        return self.model.init(
            rng,
            jnp.zeros((1, 8, 8, 1), self.float_dtype),
            jnp.zeros((1,), self.float_dtype),
            jnp.zeros((1,), jnp.int32),
        )

    def batch_axes(self):
        return {"x": ("batch", None, None, None), "label": ("batch",)}

    def train_batch(self, step):
        idx = digits.epoch_batch_indices(
            len(self.data["train_y"]), self.batch_size, self.config.seed, step
        )
        return {"x": self.data["train_x"][idx], "label": self.data["train_y"][idx]}

    def evaluate(self, params, model_state, step, workdir):
        n = int(self.config.eval.num_samples)
        labels = np.arange(n) % 10
        samples = self.sample(params, n, labels)
        if self._features is None:
            self._features = metrics.DigitsFeatures(workdir)
        real = self.data["test_x"]
        fd = self._features.frechet_distance(samples, real)
        # The floor a perfect model would reach with this many samples: real training images vs test.  # noqa: E501
        floor = self._features.frechet_distance(self.data["train_x"][:n], real)
        scalars = {"digits_fd": fd, "digits_fd_real_floor": floor}
        return scalars, {"samples": image_grid(samples[:100], 10)}


class Toy2D(_DiffusionTask):
    """A 2-D Gaussian mixture (8 modes on a circle) with an MLP denoiser."""

    data_shape = (2,)
    default_backbone = "mlp"

    def __init__(self, config, policy=None):
        super().__init__(config, policy)
        angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        self.mixture = GaussianMixture(
            np.stack([2 * np.cos(angles), 2 * np.sin(angles)], 1),
            np.full((8, 2), float(config.data.mode_std)),
            np.full(8, 1 / 8),
        )

    def init_variables(self, rng):
        return self.model.init(
            rng, jnp.zeros((1, 2), self.float_dtype), jnp.zeros((1,), self.float_dtype)
        )

    def batch_axes(self):
        return {"x": ("batch", None)}

    def train_batch(self, step):
        # Data randomness must not come from the trainer's stream fold_in(key(seed), step): with
        # partitionable threefry, split(k, 2)[1] == split(k, 3)[1], so the data noise would equal
        # the diffusion noise and the model would learn to read it back.
        rng = np.random.default_rng([self.config.seed, step, 0xDA7A])
        comp = rng.choice(len(self.mixture.weights), self.batch_size, p=self.mixture.weights)
        noise = rng.standard_normal((self.batch_size, 2))
        x = self.mixture.means[comp] + self.mixture.stds[comp] * noise
        return {"x": x.astype(np.float32)}

    def evaluate(self, params, model_state, step, workdir):
        n = int(self.config.eval.num_samples)
        samples = self.sample(params, n)
        real = np.asarray(self.mixture.sample(jax.random.key(12345), n))
        scalars = {
            "sliced_wasserstein": metrics.sliced_wasserstein(samples, real),
            # the samples' mean negative log-likelihood under the exact data law: the precision
            # side (samples off the modes cost), where SW mixes it with coverage
            "data_nll": float(-self.mixture.log_prob(samples).mean()),
        }
        return scalars, {"samples": scatter(samples, real)}


def image_grid(images, cols: int, upscale: int = 4) -> np.ndarray:
    """(N, H, W, 1) in [-1, 1] -> one uint8 picture, `cols` images per row."""
    imgs = np.clip((np.asarray(images)[..., 0] + 1) * 127.5, 0, 255).astype(np.uint8)
    n, h, w = imgs.shape
    rows = -(-n // cols)
    canvas = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    return np.kron(canvas, np.ones((upscale, upscale), np.uint8))


def scatter(samples, real, size: int = 256, extent: float = 3.5) -> np.ndarray:
    """Samples (black) over real data (grey) as a uint8 picture, without a plotting library."""
    img = np.full((size, size), 255, np.uint8)
    for pts, value in ((real, 170), (samples, 0)):
        ij = np.clip(
            ((np.asarray(pts) + extent) / (2 * extent) * (size - 1)).astype(int), 0, size - 1
        )
        img[size - 1 - ij[:, 1], ij[:, 0]] = value
    return img

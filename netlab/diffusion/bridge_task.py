"""Paired image translation with a diffusion bridge: digits edge map -> digit
(task `diffusion.digits_bridge`, configs/diffusion/digits_bridge.py).

Data: scikit-learn's digits (8x8, [-1, 1]) and, as each image's pair, its edge map `edge_map(x)`:
the Sobel gradient magnitude of the image in [0, 1] (zero padding), divided by EDGE_SCALE,
clipped to [0, 1] and mapped back to [-1, 1]; deterministic and computed on the host once.

Model: DDBM (Zhou et al. 2024, ddbm.py) in VP form from the source end x_T = edge map at
log-SNR `bridge.logsnr_T` (DDBM's VP bridge has logsnr_T = log(e^-1.1 / (1 - e^-1.1)) = -0.69)
to the data x0. The denoiser is D = c_skip x_t + c_out F(c_in x_t, logsnr, x_T) with App. B's
preconditioning (`ddbm.denoiser`), sigma_0, sigma_T and their covariance measured on the
training pairs (per pixel, pooled). F is `model.backbone` (a DiT by default) on the channels
[c_in x_t, x_T] (x_T unscaled, as the authors concatenate it), of which the first output channel
is kept: the backbones map C channels to C, so the second one is unused. Unconditional (no
class labels).

Loss: `ddbm.loss` (Eq. 12 with App. B's weight 1 / c_out^2) at per-row log-SNR drawn uniformly in
(logsnr_T, `bridge.logsnr_max`], summed over pixels and averaged over the batch. DDBM samples t
uniformly in its VP time; uniform log-SNR is our choice (simpler, covers both ends).

Sampling (`bridge.sampler`): "dbim" (Zheng et al. 2025, dbim.py; `bridge.eta`, and
`bridge.order` 2 or 3 for its high-order solver, deterministic) on `bridge.sample_steps`
intervals uniform in the bridge's lambda from logsnr_T + BOOT_OFFSET to logsnr_max, plus a last
step to sigma = 0; or "ddbm" (DDBM's hybrid SDE/Heun sampler, `bridge.churn_step_ratio`) on the
same grid without the last step (its grid must end at finite log-SNR). NFE: DBIM
sample_steps + 2, DDBM about 3 per step.

Evaluation translates the test split's edge maps and reports the digits Frechet distance of the
translations against the test digits (`bridge_fd`, metrics.DigitsFeatures), the mean squared
error per pixel to the paired targets (`bridge_mse`), and the same two numbers for the identity
baseline (output = edge map); the picture has rows of edge maps, translations and targets.
Measured numbers: bench/results/digits_bridge.md.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from netlab.data import digits
from netlab.diffusion import dbim, ddbm, metrics
from netlab.diffusion.task import _noise_cond, build_backbone, image_grid
from netlab.errors import UserError
from netlab.nn import precision
from netlab.registry import check_choice, check_range

EDGE_SCALE = 4.0  # Sobel magnitude of a [0, 1] image that maps to 1 (at most 4 sqrt 2)
BOOT_OFFSET = 0.05  # first grid point: logsnr_T + this (DBIM boots there; c_T = 0 at logsnr_T)
SAMPLERS = ("dbim", "ddbm")
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def edge_map(x):
    """(N, H, W, 1) images in [-1, 1] -> their Sobel edge maps in [-1, 1] (numpy, float32)."""
    u = (np.asarray(x, np.float64)[..., 0] + 1.0) / 2.0
    _, h, w = u.shape
    p = np.pad(u, ((0, 0), (1, 1), (1, 1)))
    gx = sum(SOBEL_X[i, j] * p[:, i : i + h, j : j + w] for i in range(3) for j in range(3))
    gy = sum(SOBEL_X[j, i] * p[:, i : i + h, j : j + w] for i in range(3) for j in range(3))
    mag = np.clip(np.hypot(gx, gy) / EDGE_SCALE, 0.0, 1.0)
    return (2.0 * mag - 1.0)[..., None].astype(np.float32)


class DigitsBridge:
    """Edge map -> digit with a DDBM bridge, sampled by DBIM or DDBM (module docstring)."""

    data_shape = (8, 8, 1)

    def __init__(self, config, policy=None):
        self.config = config
        self.policy = policy or precision.from_config(config.train)
        self.float_dtype = self.policy.float_dtype
        b = config.bridge
        self.logsnr_T = float(b.logsnr_T)
        self.logsnr_max = float(b.logsnr_max)
        if not self.logsnr_T + BOOT_OFFSET < self.logsnr_max:
            raise UserError(
                f"bridge.logsnr_T={b.logsnr_T}, bridge.logsnr_max={b.logsnr_max}: expected "
                f"logsnr_T + {BOOT_OFFSET} < logsnr_max (the source end is the noisier one)"
            )
        self.sampler = check_choice("bridge.sampler", b.sampler, SAMPLERS)
        self.steps = check_range("bridge.sample_steps", int(b.sample_steps), 1, integer=True)
        self.order = check_choice("bridge.order", int(b.order), (1, 2, 3))
        self.eta = check_range("bridge.eta", float(b.eta), 0.0, 1.0)
        self.churn = check_range("bridge.churn_step_ratio", float(b.churn_step_ratio), 0.0, 1.0)
        if self.order > 1 and self.eta:
            raise UserError(
                f"bridge.order={self.order} with bridge.eta={self.eta}: DBIM's high-order "
                f"solver is deterministic; set bridge.eta=0 or bridge.order=1"
            )
        self.batch_size = check_range("train.batch_size", int(config.train.batch_size), 1)
        self.data = digits.load()
        self.edges = {k: edge_map(self.data[f"{k}_x"]) for k in ("train", "test")}
        x0, xt = self.data["train_x"], self.edges["train"]
        self.sigma_0, self.sigma_T = float(x0.std()), float(xt.std())
        self.cov = float(np.mean((x0 - x0.mean()) * (xt - xt.mean())))
        self.model = build_backbone(config.model, (8, 8, 2), 0, self.policy)
        self._features = None

    # --- the model ------------------------------------------------------------------------------
    def network(self, params):
        """F(x_in, logsnr, x_T) -> (N, 8, 8, 1); logsnr a scalar or one per row (any shape)."""

        def net(x_in, logsnr, x_T):
            n = x_in.shape[0]
            lam = jnp.broadcast_to(jnp.reshape(logsnr, (-1,)), (n,))
            inp = jnp.concatenate([x_in, x_T.astype(x_in.dtype)], -1)
            out = self.model.apply({"params": params}, inp, _noise_cond(lam))
            return out[..., :1].astype(x_in.dtype)

        return net

    def denoiser(self, params):
        """D(x_t, logsnr, x_T) ~ E[x0 | x_t, x_T] (DDBM's preconditioning of `network`)."""
        return ddbm.denoiser(
            self.network(params), self.logsnr_T, self.sigma_0, self.sigma_T, self.cov
        )

    # --- protocol -------------------------------------------------------------------------------
    def global_batch_size(self):
        return self.batch_size

    def init_variables(self, rng):
        x = jnp.zeros((1, 8, 8, 2), self.float_dtype)
        return self.model.init(rng, x, jnp.zeros((1,), self.float_dtype))

    def batch_axes(self):
        return {"x": ("batch", None, None, None), "x_T": ("batch", None, None, None)}

    def train_batch(self, step):
        idx = digits.epoch_batch_indices(
            len(self.data["train_y"]), self.batch_size, self.config.seed, step
        )
        return {"x": self.data["train_x"][idx], "x_T": self.edges["train"][idx]}

    def noise(self, n, rng, dtype):
        """(per-row log-SNR (N, 1, 1, 1) uniform in (logsnr_T, logsnr_max], eps) from rng."""
        k_t, k_eps = jax.random.split(rng)
        u = jax.random.uniform(k_t, (n, 1, 1, 1), dtype)
        logsnr = self.logsnr_max - u * (self.logsnr_max - self.logsnr_T)
        return logsnr, jax.random.normal(k_eps, (n,) + self.data_shape, dtype)

    def loss_fn(self, params, model_state, batch, rng, train):
        x0 = jnp.asarray(batch["x"]).astype(self.float_dtype)
        x_T = jnp.asarray(batch["x_T"]).astype(self.float_dtype)
        logsnr, eps = self.noise(x0.shape[0], rng, x0.dtype)
        per_row = ddbm.loss(
            self.denoiser(params),
            x0,
            x_T,
            eps,
            logsnr,
            self.logsnr_T,
            self.sigma_0,
            self.sigma_T,
            self.cov,
        )
        return per_row.mean(), ({"bridge_loss": per_row.mean()}, model_state)

    # --- sampling -------------------------------------------------------------------------------
    def grid(self, steps=None):
        """Host float64 log-SNR grid: uniform in the bridge's lambda, `steps` intervals from
        logsnr_T + BOOT_OFFSET to logsnr_max; DBIM adds a last point at +inf (sigma = 0)."""
        g = dbim.lambda_grid(
            steps or self.steps, self.logsnr_T + BOOT_OFFSET, self.logsnr_max, self.logsnr_T
        )
        return np.append(g, np.inf) if self.sampler == "dbim" else g

    @functools.partial(jax.jit, static_argnums=(0,))
    def _translate(self, params, x_T, grid, key):
        denoise = self.denoiser(params)
        if self.sampler == "ddbm":
            return ddbm.sample(
                denoise, x_T, x_T, grid, self.logsnr_T, key, churn_step_ratio=self.churn
            )
        if self.order > 1:
            return dbim.sample_high_order(denoise, x_T, grid, self.logsnr_T, key, order=self.order)
        return dbim.sample(denoise, x_T, grid, self.logsnr_T, key, eta=self.eta)

    def translate(self, params, x_T, steps=None, seed=0):
        """Translations (numpy) of the edge maps x_T (N, 8, 8, 1) by `bridge.sampler`."""
        x_T = jnp.asarray(x_T, self.float_dtype)
        grid = jnp.asarray(self.grid(steps), self.float_dtype)
        out = self._translate(params, x_T, grid, jax.random.key(seed))
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))

    def evaluate(self, params, model_state, step, workdir):
        n = min(int(self.config.eval.num_samples), len(self.data["test_y"]))
        target, edges = self.data["test_x"][:n], self.edges["test"][:n]
        out = self.translate(params, edges)
        if self._features is None:
            self._features = metrics.DigitsFeatures(workdir)
        fd = self._features.frechet_distance
        scalars = {
            "bridge_fd": fd(out, target),
            "bridge_mse": float(np.mean((out - target) ** 2)),
            "identity_fd": fd(edges, target),
            "identity_mse": float(np.mean((edges - target) ** 2)),
            "real_fd_floor": fd(self.data["train_x"][:n], target),
        }
        rows = np.concatenate([edges[:10], out[:10], target[:10]])
        return scalars, {"samples": image_grid(rows, 10)}

"""Decentralized Diffusion Models as training tasks: `diffusion.toy2d_ddm`, `diffusion.digits_ddm`.

The method is in ddm.py (McAllister et al. 2025). When the task is built, the training data are
split into `ddm.num_experts` disjoint partitions (`ddm.partition`: "kmeans", Lloyd on the data,
seeded by `config.seed`; or "random" shards); the toy task first draws a fixed training set of
`ddm.num_points` points from its mixture. Every step's global batch is K blocks of
batch_size / K rows, block k drawn from partition k only (`train_batch`), and

    loss = sum_k L_denoise(expert k on block k) + CE(router on all rows, partition ids),

so expert k's gradient only reads block k: the experts are islands that never communicate (their
stacked parameters carry the leading `ddm.EXPERT_AXIS`, which configs/diffusion/*_ddm.py map to
the `island` mesh axis; the optimizer is element-wise, so `optimizer.clip_norm`, a global norm
that would couple them, must be 0). The router is trained in the same steps on the same noised
rows; its cross-entropy weights block k by K pi_k (pi_k = |S_k| / N), because every block has the
same number of rows while the mixture weights the partitions by their sizes: the weighted
minimiser is p(k | x_t) of the data, the weights the ensemble needs (ddm.py).

Sampling evaluates every expert on the same x_t and mixes their x0-predictions with the router's
softmax, kept to the top `ddm.top_k` (0: the full ensemble); evaluation also reports top-1
routing. Bad values (K < 1, more experts than points, a batch K does not divide, an empty
partition, a sparse MLP) are one-line UserErrors when the task is built.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from netlab.data.kmeans import kmeans
from netlab.diffusion import ddm, guidance, losses, metrics, parameterization, samplers, schedules
from netlab.diffusion.task import DigitsDiffusion, Toy2D, _noise_cond
from netlab.errors import UserError
from netlab.registry import check_choice, check_range
from netlab.sharding import axes

PARTITIONS = ("kmeans", "random")


class _DDM:
    """The DDM parts of a diffusion task (a mixin in front of Toy2D / DigitsDiffusion)."""

    # The experts' leading axis is meant for the `island` mesh axis (expert k on island k), which
    # the trainer's DiLoCo islands mode also claims; this tells the trainer the task owns it.
    owns_island_axis = True

    def build_model(self):
        c, m = self.config.ddm, self.config.model
        self.num_experts = k = check_range("ddm.num_experts", c.num_experts, 1, integer=True)
        check_choice("ddm.partition", c.partition, PARTITIONS)
        self.top_k = check_range("ddm.top_k", c.top_k, 0, k, integer=True)
        if self.batch_size % k:
            raise UserError(
                f"train.batch_size={self.batch_size}: a DDM batch is ddm.num_experts={k} equal "
                f"blocks; use a multiple of {k}"
            )
        if m.get("mlp", "dense") != "dense":
            raise UserError(f"model.mlp={m.mlp!r}: DDM experts are dense; use model.mlp='dense'")
        if float(self.config.optimizer.clip_norm):
            raise UserError(
                f"optimizer.clip_norm={self.config.optimizer.clip_norm}: a global norm couples "
                "the DDM experts (trained in isolation); set it to 0"
            )
        backbone = super().build_model()
        self.router = ddm.Router(
            k,
            width=check_range("ddm.router_width", c.router_width, 1, integer=True),
            depth=check_range("ddm.router_depth", c.router_depth, 0, integer=True),
            num_classes=self.num_classes,
            dtype=self.policy.compute_dtype,
        )
        self.shared = ddm.ExpertStack(backbone, k, shared_input=True)
        return ddm.ExpertStack(backbone, k)

    def _partition(self, points):
        """Split the training points into the K partitions (host-side, deterministic)."""
        k, n = self.num_experts, len(points)
        if k > n:
            raise UserError(f"ddm.num_experts={k}: more experts than the {n} training points")
        if self.config.ddm.partition == "kmeans":
            assign = kmeans(points, k, seed=int(self.config.seed))[1]
        else:
            assign = ddm.random_partition(n, k, seed=int(self.config.seed))
        self.parts = [np.flatnonzero(assign == j) for j in range(k)]
        sizes = np.array([len(p) for p in self.parts])
        if not sizes.all():
            raise UserError(
                f"ddm.num_experts={k}: partition {int(np.argmin(sizes))} is empty; "
                "use fewer experts"
            )
        self.priors = sizes / n
        # router cross-entropy weight of a row of block j: pi_j / (1 / K), see the docstring
        self.router_weights = jnp.asarray(self.priors * k, jnp.float32)

    def _rows(self, idx):
        raise NotImplementedError

    def train_batch(self, step):
        """K blocks of batch_size / K rows; block k holds rows of partition k only."""
        rng = np.random.default_rng([self.config.seed, step, 0xDD3])
        per = self.batch_size // self.num_experts
        idx = np.concatenate([p[rng.integers(len(p), size=per)] for p in self.parts])
        return self._rows(idx)

    def init_variables(self, rng):
        k = self.num_experts
        x = jnp.zeros((k, 1) + self.data_shape, self.float_dtype)
        c = jnp.zeros((k, 1), self.float_dtype)
        lab = jnp.zeros((k, 1), jnp.int32) if self.num_classes else None
        k1, k2 = jax.random.split(rng)
        experts = self.model.init(k1, x, c, lab)["params"]
        router = self.router.init(k2, x[0], c[0], None if lab is None else lab[0])["params"]
        return {"params": {"experts": experts, "router": router}}

    def _inputs(self, x_t, logsnr):
        alpha, sigma = schedules.alpha_sigma(logsnr)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
        inp = parameterization.network_input(x_t, alpha, sigma, self.kind)
        return inp, _noise_cond(logsnr), alpha, sigma

    def loss_fn(self, params, model_state, batch, rng, train):
        d, k = self.config.diffusion, self.num_experts
        x0, x_t, _, logsnr, labels, k_model = self.noised(batch, rng)
        inp, cond, alpha, sigma = self._inputs(x_t, logsnr)

        def split(a):  # (B, ...) -> (K, B/K, ...), block k on expert k's island
            if a is None:
                return None
            a = a.reshape((k, -1) + a.shape[1:])
            return axes.constrain(a, ddm.EXPERT_AXIS, axes.BATCH, *(None,) * (a.ndim - 2))

        out = self.model.apply(
            {"params": params["experts"]},
            split(inp),
            split(cond),
            split(labels),
            bool(train),
            rngs={"dropout": k_model},
        )
        x0_hat = parameterization.denoised(split(x_t), out, split(alpha), split(sigma), self.kind)
        per_loss, per_mse = jax.vmap(
            lambda a, b, s: losses.denoising_loss(a, b, s, d.weighting, gamma=d.min_snr_gamma)
        )(x0_hat, split(x0), split(logsnr))
        logits = self.router.apply({"params": params["router"]}, inp, cond, labels)
        part = jnp.repeat(jnp.arange(k), x0.shape[0] // k)
        ce, acc = ddm.router_loss(logits, part, self.router_weights[part])
        out = {"x0_mse": per_mse.mean(), "expert_loss": per_loss.mean()}
        out.update({"router_ce": ce, "router_acc": acc})
        return per_loss.sum() + ce, (out, model_state)

    def ensemble_denoise(self, params, x, logsnr, labels, top_k):
        """x0_hat of the ensemble at per-row log-SNR: sum_k sparsify(r)_k D_k(x_t)."""
        inp, cond, alpha, sigma = self._inputs(x, logsnr)
        out = self.shared.apply({"params": params["experts"]}, inp, cond, labels)
        x0_k = parameterization.denoised(x[None], out, alpha[None], sigma[None], self.kind)
        logits = self.router.apply({"params": params["router"]}, inp, cond, labels)
        return ddm.combine(ddm.sparsify(jax.nn.softmax(logits, axis=-1), top_k), x0_k)

    @functools.partial(jax.jit, static_argnums=(0, 5))
    def _sample(self, params, x_T, grid, labels, method, scale, key):
        sampler, top_k = method

        def model(x, logsnr, lab):
            ls = jnp.full((x.shape[0],), logsnr)
            return self.ensemble_denoise(params, x, ls, lab, top_k)

        if self.num_classes:
            denoise = guidance.classifier_free(model, labels, self.num_classes, scale)
        else:
            denoise = lambda x, logsnr: model(x, logsnr, None)  # noqa: E731
        kwargs = self.sampler_kwargs if sampler == self.config.diffusion.sampler else {}
        return samplers.sample(
            denoise, x_T, grid, sampler, key=key, schedule=self.schedule, **kwargs
        )

    def sample(
        self, params, n, labels=None, method=None, steps=None, scale=None, seed=0, top_k=None
    ):
        method = (method or self.config.diffusion.sampler, self.top_k if top_k is None else top_k)
        return super().sample(params, n, labels, method, steps, scale, seed)


class DDMToy2D(_DDM, Toy2D):
    """DDM on the 8-mode 2-D mixture: a fixed set of `ddm.num_points` draws, clustered."""

    def __init__(self, config, policy=None):
        super().__init__(config, policy)
        n = check_range("ddm.num_points", config.ddm.num_points, 1, integer=True)
        rng = np.random.default_rng([config.seed, 0xDDA7A])
        comp = rng.choice(len(self.mixture.weights), n, p=self.mixture.weights)
        pts = self.mixture.means[comp] + self.mixture.stds[comp] * rng.standard_normal((n, 2))
        self.points = pts.astype(np.float32)
        self._partition(self.points)

    def _rows(self, idx):
        return {"x": self.points[idx]}

    def evaluate(self, params, model_state, step, workdir):
        scalars, images = super().evaluate(params, model_state, step, workdir)
        n = int(self.config.eval.num_samples)
        real = np.asarray(self.mixture.sample(jax.random.key(12345), n))
        top1 = self.sample(params, n, top_k=1)
        scalars["sliced_wasserstein_top1"] = metrics.sliced_wasserstein(top1, real)
        return scalars, images


class DDMDigits(_DDM, DigitsDiffusion):
    """DDM on the digits images: k-means on the training pixels, class-conditional experts."""

    def __init__(self, config, policy=None):
        super().__init__(config, policy)
        self._partition(self.data["train_x"])

    def _rows(self, idx):
        return {"x": self.data["train_x"][idx], "label": self.data["train_y"][idx]}

    def evaluate(self, params, model_state, step, workdir):
        scalars, images = super().evaluate(params, model_state, step, workdir)
        n = int(self.config.eval.num_samples)
        top1 = self.sample(params, n, np.arange(n) % 10, top_k=1)
        scalars["digits_fd_top1"] = self._features.frechet_distance(top1, self.data["test_x"])
        return scalars, images

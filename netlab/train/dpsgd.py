"""DP-SGD's per-example clipping and noise: Abadi et al. 2016, "Deep Learning with Differential
Privacy" (CCS), Algorithm 1; the noise bookkeeping of Sander, Stock & Sablayrolles 2023, "TAN
Without a Burn: Scaling Laws of DP-SGD" (ICML).

Algorithm 1, one step on a batch of B examples: the gradient of every example g_i (here
`per_example_grads`, a `jax.vmap` of `jax.grad` over the batch axis), clipped to L2 norm C,
g_i / max(1, |g_i| / C); summed; Gaussian noise N(0, sigma^2 C^2 I) added; divided by B. The
clipping and noise are optax's `optax.contrib.differentially_private_aggregate` (re-exported as
`aggregate`), a `GradientTransformation` that takes the per-example gradients (leading batch axis)
and must come first in a chain, e.g. `optax.chain(aggregate(C, sigma, key), optax.sgd(lr))`.
Each example moves the summed gradient by at most C (its sensitivity), whatever its loss.

In the trainer: `optimizer.dp_clip_norm = C > 0` (with `optimizer.dp_noise` = sigma) makes the
train step compute the gradient with `PrivateGradient` instead of the batch-mean gradient: each
example is passed to the task's `loss_fn` as a batch of one under `jax.vmap`, its gradient clipped
(`optax.per_example_global_norm_clip`), the clipped gradients summed, N(0, sigma^2 C^2) noise
added and the sum divided by B; the configured optimizer (adamw, sgd, ...) then treats that as
the gradient (post-processing keeps the guarantee). `from_config` refuses in one line what this
cannot make private: islands, a pipeline (mesh.stage > 1), train.grad_accum > 1, a model state
(batch statistics mix examples) and batch leaves without a leading batch axis (full-batch graphs).
The privacy budget of the configured run (eps at `optimizer.dp_delta` for q = B / N over
train.steps steps, `netlab.train.tan`) is printed once when the trainer is built. The accountant
assumes Poisson sampling; the tasks draw fixed-size batches, the usual approximation.

Noise scale (TAN, Sander et al. 2023): the noise on the averaged gradient has standard deviation
sigma C / B (`noise_std`), so B and sigma can be scaled together at a fixed sigma / B. With
sampling rate q = B / N and S steps, Abadi et al.'s log-moment bound (Lemma 3,
q^2 lambda (lambda + 1) / ((1 - q) sigma^2) + O(q^3 lambda^3 / sigma^3)) gives a Renyi-DP of about
S q^2 alpha / sigma^2 at order alpha for small q, so when sigma is large enough (the paper: about
sigma > 2) the budget depends on (sigma, q, S) only through the total amount of noise
eta = sigma / (q sqrt(S)): eps(delta) ~= min_alpha alpha / eta^2 + log(1/delta) / (alpha - 1).
The budget itself comes from the RDP accountant of the sampled Gaussian mechanism in
`netlab.train.tan` (Mironov et al. 2019), not from this approximation.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from netlab.errors import UserError
from netlab.registry import check_range
from netlab.train import tan

aggregate = optax.contrib.differentially_private_aggregate


def per_example_grads(loss_fn, params, batch):
    """The gradient of `loss_fn(params, batch)` for each example: every leaf has the batch axis.

    `loss_fn` takes a batch (leading axis); each example is passed as a batch of one."""

    def one(example):
        return jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[None], example))

    return jax.vmap(one)(batch)


def noise_std(noise_multiplier: float, clip: float, batch_size: int) -> float:
    """Standard deviation of the noise on the averaged gradient, sigma C / B (Algorithm 1)."""
    return noise_multiplier * clip / batch_size


@dataclasses.dataclass(frozen=True)
class PrivateGradient:
    """The DP-SGD gradient of a task's loss: clipped per-example gradients, summed, noised, / B."""

    clip: float
    noise_multiplier: float

    def __call__(self, loss_fn, params, model_state, batch, rng):
        """(loss, metrics, model_state, gradient) like the trainer's `_loss_and_grad`."""
        n = jax.tree.leaves(batch)[0].shape[0]
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def one(example, i):
            example = jax.tree.map(lambda a: a[None], example)
            (loss, (metrics, _)), g = grad_fn(
                params, model_state, example, jax.random.fold_in(rng, i), True
            )
            return loss, metrics, g

        losses, metrics, grads = jax.vmap(one)(batch, jnp.arange(n))
        leaves, treedef = jax.tree.flatten(grads)
        summed, num_clipped = optax.per_example_global_norm_clip(leaves, self.clip)
        keys = jax.random.split(jax.random.fold_in(rng, n), len(leaves))
        std = self.noise_multiplier * self.clip
        noised = [
            (g + std * jax.random.normal(k, g.shape, g.dtype)) / n for g, k in zip(summed, keys)
        ]
        metrics = jax.tree.map(lambda m: m.mean(0), metrics)
        metrics["dp_clipped_fraction"] = num_clipped / n
        return losses.mean(), metrics, model_state, jax.tree.unflatten(treedef, noised)


def from_config(config, task, *, islands, stages, model_state, batch_axes, lead=True):
    """A `PrivateGradient` when `optimizer.dp_clip_norm > 0` (else None); prints the budget."""
    opt = config.optimizer
    clip = check_range("optimizer.dp_clip_norm", float(opt.get("dp_clip_norm", 0.0)), 0.0)
    if clip == 0:
        return None
    sigma = check_range("optimizer.dp_noise", float(opt.get("dp_noise", 1.0)), 0.0)
    refuse = {
        "islands.sync_every >= 1": islands,
        "mesh.stage > 1": stages > 1,
        "train.grad_accum > 1": int(config.train.grad_accum) > 1,
        "a model state (batch statistics)": bool(jax.tree.leaves(model_state)),
        "batch leaves without a leading batch axis": any(
            not axes or axes[0] != "batch"
            for axes in jax.tree.leaves(batch_axes, is_leaf=lambda x: isinstance(x, tuple))
        ),
    }
    bad = [k for k, v in refuse.items() if v]
    if bad:
        raise UserError(
            f"optimizer.dp_clip_norm={clip:g}: DP-SGD cannot run with {bad[0]} (per-example "
            "gradients of a single-process step only); set optimizer.dp_clip_norm=0 or drop it"
        )
    size = int(opt.get("dp_dataset_size", 0)) or int(getattr(task, "num_train_examples", 0))
    if size <= 0:
        raise UserError(
            f"optimizer.dp_clip_norm={clip:g}: the task does not say its training-set size; "
            "set optimizer.dp_dataset_size to it (for the privacy accounting)"
        )
    if lead:
        print(budget_line(sigma, task.global_batch_size(), size, config), flush=True)
    return PrivateGradient(clip, sigma)


def budget_line(sigma, batch, size, config):
    steps, delta = int(config.train.steps), float(config.optimizer.get("dp_delta", 1e-5))
    q = min(batch / size, 1.0)
    if sigma == 0:
        return f"DP-SGD: q={q:.4g}, {steps} steps, noise 0: clipping only, no privacy (eps = inf)"
    eps, order = tan.epsilon(q, sigma, steps, delta)
    eta = tan.total_amount_of_noise(sigma, q, steps)
    return (
        f"DP-SGD: q={q:.4g} (B={batch}, N={size}), sigma={sigma:g}, {steps} steps: "
        f"eps={eps:.3g} at delta={delta:g} (RDP order {order}); TAN eta={eta:.3g}"
    )

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

Not selectable as `optimizer.name`: the trainer's step averages the batch gradient before the
optimizer sees it, while DP-SGD needs the per-example gradients. A task that trains privately
calls `per_example_grads` in its own step.

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

import jax
import optax

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

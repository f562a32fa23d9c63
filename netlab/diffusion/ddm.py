"""Decentralized Diffusion Models (McAllister, Tancik, Song, Kanazawa 2025, arXiv 2501.05450).

K expert denoisers D_k are trained in isolation, each on one partition S_k of the data (a cluster
of a k-means on the data, or a random shard), and a light router r_k(x_t, t) ~ p(k | x_t) is
trained with cross-entropy to tell which partition a noisy sample came from. At sampling time the
experts are ensembled (the paper's "Decentralized Flow Matching" section):

    D(x_t, t) = sum_k r_k(x_t, t) D_k(x_t, t).

Why the ensemble optimises the single-model objective. With p = sum_k pi_k p_k (pi_k = |S_k|/N)
the monolithic denoising loss splits by partition, E_p ||D(x_t) - x0||^2 = sum_k pi_k E_{p_k}
||D(x_t) - x0||^2, and its minimiser is the posterior mean

    E[x0 | x_t] = sum_k p(k | x_t) E[x0 | x_t, k],   p(k | x_t) = pi_k p_{k,t}(x_t) / p_t(x_t),

where E[x0 | x_t, k] is exactly what expert k minimises on its own partition and p(k | x_t) is what
the router's cross-entropy minimises (its targets are drawn with frequency pi_k, so unequal
clusters are weighted right). The paper writes this for the flow (velocity) u_t = sum_k p(k|x_t)
u_t^k; here the mixture is taken over x0-predictions, and the two are the same ensemble: v, eps and
the flow are all a*x_t + b*x0_hat with a, b depending on t only, and the weights sum to one, so
sum_k r_k (a x_t + b x0_k) = a x_t + b sum_k r_k x0_k for every parameterisation. The exact test
(tests/diffusion/test_ddm.py) checks the identity with the closed-form mixture denoiser (oracle.py).

The paper also sparsifies the router at inference (top-1 / top-k: keep the k largest weights and
renormalise, `sparsify`); a follow-up (Villagra et al. 2026) finds top-2 far better than the full
ensemble on LAION. Here every expert is still evaluated (dense, one stacked call); top-k only
changes the weights, so it measures quality, not the compute a sparse dispatch would save.

Layout. The K experts are one backbone under `nn.vmap` (`ExpertStack`): every parameter gets a
leading expert axis named `EXPERT_AXIS`, which the DDM configs map to the `island` mesh axis, so
expert k lives on island k and trains with no collective across islands (its loss only reads its
own rows, and the optimizer is element-wise). Partitioning is host-side and deterministic
(`netlab.data.kmeans`: Lloyd's algorithm from a seeded k-means++ start; `random_partition`).
Deliberate difference: the paper clusters DINOv2 features of images; this library clusters the
data itself (2-D points, 8x8 digits pixels), which is what such small data allows.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import layers
from netlab.sharding import axes

# Logical name of the stacked experts' leading axis; configs/diffusion/*_ddm.py map it to "island".
EXPERT_AXIS = "ddm_expert"


class ExpertStack(nn.Module):
    """K independent copies of `backbone` (leading parameter axis `EXPERT_AXIS`).

    `shared_input=False` (training): x, noise_cond, labels carry a leading expert axis (K, B, ...)
    and expert k sees only its slice. `shared_input=True` (sampling): every expert sees the same
    (B, ...) input and the output is (K, B, ...)."""

    backbone: nn.Module
    num_experts: int
    shared_input: bool = False
    # the mesh axis of the expert dimension inside the backbone's activation constraints (the one
    # `EXPERT_AXIS` maps to); without it vmap would constrain that dimension to be replicated
    spmd_axis: Any = "island"

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        in_axes = None if self.shared_input else 0
        stack = nn.vmap(
            lambda mdl, x, c, lab: mdl(x, c, lab, train),
            variable_axes={"params": 0, "aux_loss": 0, "aux_metrics": 0},
            split_rngs={"params": True, "dropout": True, "router": True},
            in_axes=(in_axes, in_axes, in_axes),
            axis_size=self.num_experts,
            metadata_params={nn.PARTITION_NAME: EXPERT_AXIS},
            spmd_axis_name=self.spmd_axis,
        )
        return stack(self.backbone, x, noise_cond, labels)


class Router(nn.Module):
    """r(k | x_t, t [, y]): an MLP on the flattened network input plus the noise (and class)
    embedding -> K float32 logits. It sees the same conditioning as the experts (the task's
    `_noise_cond`, the parameterisation's network input), as the paper's router must."""

    num_experts: int
    width: int = 128
    depth: int = 2
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, noise_cond, labels=None):
        c = layers.TimestepEmbedder(self.width, name="t_embed")(noise_cond)
        if self.num_classes and labels is not None:
            table = self.param(
                "label_embed",
                axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                (self.num_classes + 1, self.width),
                jnp.float32,
            )
            c = c + table[labels]
        h = x.reshape(x.shape[0], -1).astype(self.dtype)
        h = layers.dense(self.width, None, axes.EMBED, self.dtype, name="inp")(h)
        h = h + c.astype(self.dtype)
        for i in range(self.depth):
            z = nn.silu(layers.layer_norm(self.dtype, name=f"ln{i}")(h))
            h = h + layers.Mlp(2 * self.width, self.dtype, name=f"mlp{i}")(z[:, None])[:, 0]
        h = nn.silu(layers.layer_norm(self.dtype, name="ln_out")(h))
        out = layers.dense(self.num_experts, axes.EMBED, None, self.dtype, name="out")(h)
        return out.astype(jnp.float32)


def sparsify(weights, top_k: int):
    """Keep each row's `top_k` largest router weights and renormalise (the paper's top-k
    inference); top_k = 0 or >= K is the full ensemble. weights: (..., K), rows summing to 1."""
    k = weights.shape[-1]
    if top_k <= 0 or top_k >= k:
        return weights
    kth = jax.lax.top_k(weights, top_k)[0][..., -1:]
    kept = jnp.where(weights >= kth, weights, 0.0)
    return kept / jnp.sum(kept, axis=-1, keepdims=True)


def combine(weights, expert_out):
    """sum_k w[b, k] expert_out[k, b, ...]: the ensemble denoiser. weights (B, K), outputs
    (K, B, ...) in x0-prediction form (any affine-in-x0 form gives the same ensemble)."""
    w = jnp.moveaxis(weights, -1, 0).astype(expert_out.dtype)
    w = w.reshape(w.shape + (1,) * (expert_out.ndim - 2))
    return jnp.sum(w * expert_out, axis=0)


def router_loss(logits, partition, weights=None):
    """Cross-entropy of the partition ids (the paper's router objective), optionally weighted per
    row (the tasks weight by K pi_k, ddm_task.py), and the accuracy."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(logp, partition[:, None], axis=-1)[:, 0]
    w = jnp.ones_like(ce) if weights is None else weights.astype(ce.dtype)
    acc = jnp.mean((jnp.argmax(logits, axis=-1) == partition).astype(jnp.float32))
    return jnp.sum(w * ce) / jnp.sum(w), acc


def random_partition(n: int, k: int, seed: int = 0):
    """Equal random shards (the paper's ablation baseline, worse than clustering)."""
    return np.random.default_rng(seed).permutation(n) % k

"""Continual learning with hypernetworks: von Oswald, Henning, Grewe & Sacramento 2020 (ICLR).

A task-conditioned hypernetwork f_h(e, Theta_h) maps a learned task embedding e^(t) to all the
weights Theta^(t) of a target network; one hypernetwork serves every task, and each task keeps only
its embedding (a few numbers). Forgetting is prevented in the weight space of the target network,
not in its outputs on old data: while task T is learned, the loss is (eq. 2, without the optional
look-ahead Delta Theta_h)

    L_task(Theta_h, e^(T), D^(T))
        + beta / (T - 1) * sum_{t < T} || f_h(e^(t), Theta_h*) - f_h(e^(t), Theta_h) ||^2

where Theta_h* are the hypernetwork's parameters before task T and e^(t) the stored (frozen)
embeddings of the earlier tasks: only the generated weights for the old tasks are pinned, and no
old data is replayed. `output_regulariser` is that sum; it is zero at Theta_h = Theta_h*.

Chunking (Sec. 3.2): the hypernetwork emits the target's weights in chunks of `chunk_size`, each
from [e, c_i] with a learned chunk embedding c_i shared by all tasks, so its output layer is
`chunk_size` wide instead of the whole target network; the concatenation is cut to the target's
size. `chunk_size=0` emits everything at once (an unchunked hypernetwork).

The target network here is a ReLU MLP given as a flat weight vector (`mlp_apply`); the paper's
split-MNIST target is an MLP too. netlab/classify/continual.py trains it on split digits
(configs/classify_continual_digits.py); bench/cl_hypernetwork.py reports old-task accuracy with
and without the regulariser.
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def mlp_shapes(sizes: Sequence[int]):
    """[(kernel shape, bias shape)] of the ReLU MLP sizes[0] -> ... -> sizes[-1]."""
    return [((a, b), (b,)) for a, b in zip(sizes[:-1], sizes[1:])]


def num_weights(sizes: Sequence[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def mlp_apply(flat, sizes: Sequence[int], x):
    """The target MLP with weights `flat` (num_weights,): kernels then bias of each layer, in
    order; ReLU between layers, logits out."""
    i = 0
    for layer, (ks, bs) in enumerate(mlp_shapes(sizes)):
        k = flat[i : i + ks[0] * ks[1]].reshape(ks)
        i += ks[0] * ks[1]
        b = flat[i : i + bs[0]]
        i += bs[0]
        x = x @ k + b
        if layer < len(sizes) - 2:
            x = jax.nn.relu(x)
    return x


class TaskHyperNetwork(nn.Module):
    """f_h(e, Theta_h): a task embedding (embed_dim,) -> the target's `num_outputs` weights."""

    num_outputs: int
    hidden: Sequence[int] = (64, 64)
    chunk_size: int = 0  # 0: unchunked
    chunk_dim: int = 8

    @nn.compact
    def __call__(self, e):
        width = self.chunk_size or self.num_outputs
        chunks = math.ceil(self.num_outputs / width)
        h = e[None, :]
        if self.chunk_size:
            c = self.param(
                "chunk_embeddings", nn.initializers.normal(1.0), (chunks, self.chunk_dim)
            )
            h = jnp.concatenate([jnp.broadcast_to(h, (chunks, e.shape[-1])), c], axis=-1)
        for i, w in enumerate(self.hidden):
            h = nn.relu(nn.Dense(w, name=f"fc{i}")(h))
        # small outputs at initialisation: the generated weights start near a plain MLP init
        small = nn.initializers.variance_scaling(0.1, "fan_in", "normal")
        out = nn.Dense(width, kernel_init=small, name="out")
        return out(h).reshape(-1)[: self.num_outputs]


def output_regulariser(generate, theta, theta_star, embeddings, mask, beta: float):
    """beta / (T - 1) * sum_t mask_t || f(e_t, Theta*) - f(e_t, Theta) ||^2 (eq. 2).

    generate(theta, e) -> weights; embeddings (num_tasks, d) the stored task embeddings; mask
    (num_tasks,) 1 for the earlier tasks t < T (T - 1 = mask.sum(); zero loss when none)."""
    star = jax.lax.stop_gradient(jax.vmap(lambda e: generate(theta_star, e))(embeddings))
    now = jax.vmap(lambda e: generate(theta, e))(jax.lax.stop_gradient(embeddings))
    per_task = jnp.sum((star - now) ** 2, axis=-1)
    return beta * jnp.sum(mask * per_task) / jnp.maximum(jnp.sum(mask), 1.0)

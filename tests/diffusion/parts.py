"""Tiny stand-in parts that configs name by import path in the diffusion tests."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.nn import aux


class SownMlp(nn.Module):
    """A 'sparse' MLP for tests: one dense layer that sows `weight * mean(x^2)` as the aux loss
    "load_balance", and the metric "train_mode" (1.0 when called with train=True), a Python
    branch on `train` that only traces when `train` reaches it as a static value."""

    hidden: int
    weight: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        aux.sow_loss(self, "load_balance", self.weight * jnp.mean(x.astype(jnp.float32) ** 2))
        aux.sow_metric(self, "train_mode", 1.0 if train else 0.0)
        h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="sparse_in")(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="sparse_out")(h)

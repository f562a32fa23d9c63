"""One precision policy (parameter dtype, compute dtype, rematerialisation) for every model.

The trainer builds a `Policy` from `config.train` and hands it to the task, which hands it to its
model builder; models take `dtype` (compute) and `remat_policy` fields and never read a config.
Parameters are float32 unless `compute_dtype=float64`, in which case everything is float64 (this
needs `jax_enable_x64`; the oracle tests use it so that tolerances can be tight).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from netlab.errors import UserError

DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "float64": jnp.float64,
}
REMAT = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class Policy:
    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    remat: str = "none"

    @property
    def remat_policy(self):
        """None (no remat) or a jax.checkpoint policy: `full` saves nothing, `dots` saves matmuls."""  # noqa: E501
        return remat_policy(self.remat)

    @property
    def float_dtype(self):
        """The dtype of float32-by-design islands (softmax, norms, schedules): float64 under x64."""
        return jnp.float64 if self.compute_dtype == jnp.float64 else jnp.float32


def from_config(train_cfg) -> Policy:
    """Policy from `config.train.{compute_dtype, remat}`; a UserError names a bad value."""
    name = train_cfg.compute_dtype
    if name not in DTYPES:
        raise UserError(f"train.compute_dtype={name!r}; choose one of {', '.join(DTYPES)}")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise UserError("train.compute_dtype=float64 needs 64-bit JAX; set JAX_ENABLE_X64=1")
    remat = getattr(train_cfg, "remat", "none")
    remat_policy(remat)
    param = jnp.float64 if name == "float64" else jnp.float32
    return Policy(param_dtype=param, compute_dtype=DTYPES[name], remat=remat)


def remat_policy(name: str):
    if name == "none":
        return None
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    if name == "dots":
        return jax.checkpoint_policies.dots_saveable
    if name == "dots_no_batch":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    raise UserError(f"train.remat={name!r}; choose one of {', '.join(REMAT)}")


def maybe_remat(module_cls, policy: Policy | None, **kwargs):
    """`module_cls` wrapped in `nn.remat` when the policy asks for rematerialisation."""
    import flax.linen as nn

    p = None if policy is None else policy.remat_policy
    return module_cls if p is None else nn.remat(module_cls, policy=p, **kwargs)

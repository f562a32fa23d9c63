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
REMAT = ("none", "full", "dots", "dots_no_batch", "offload")


@dataclasses.dataclass(frozen=True)
class Policy:
    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    remat: str = "none"

    @property
    def remat_policy(self):
        """None (no remat) or a jax.checkpoint policy for every block (see `remat_policy`)."""
        return remat_policy(self.remat)

    @property
    def float_dtype(self):
        """The dtype of float32-by-design islands (softmax, norms, schedules): float64 under x64."""
        return island_dtype(self.compute_dtype)


def island_dtype(dtype):
    """float64 for a float64 computation, else float32: the dtype of the float32-by-design islands
    (softmax, norms, schedules, embeddings) of a module computing in `dtype`."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


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
    """The `jax.checkpoint` policy each Transformer / GNN block is wrapped in (`train.remat`).

    - none: no rematerialisation; the backward pass reads every activation the forward saved.
    - full: save only each block's input; the backward pass recomputes the whole block.
    - dots: save every matmul output (attention scores included), recompute the elementwise ops.
    - dots_no_batch: save only the matmuls without dot batch dimensions (x @ W, not Q K^T).
    - offload: the dots_no_batch values, moved to pinned host memory after the forward pass and
      back for the backward pass (`offload_dot_with_no_batch_dims`): device memory near `full`,
      recompute of `dots_no_batch`, paid in host<->device transfers. Needs a backend with a
      pinned_host memory space (GPU, TPU and XLA:CPU have one).
    The losses and gradients are those of `none` (tests/nn/test_remat.py).
    """
    if name == "none":
        return None
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    if name == "dots":
        return jax.checkpoint_policies.dots_saveable
    if name == "dots_no_batch":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    if name == "offload":
        kinds = {m.kind for m in jax.devices()[0].addressable_memories()}
        if "pinned_host" not in kinds:
            raise UserError(
                f"train.remat='offload' needs a pinned_host memory space, which "
                f"{jax.default_backend()} lacks; use train.remat=dots_no_batch (the same saved "
                f"values, kept on the device) or full"
            )
        return jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host")
    raise UserError(f"train.remat={name!r}; choose one of {', '.join(REMAT)}")


def maybe_remat(module_cls, policy: Policy | None, **kwargs):
    """`module_cls` wrapped in `nn.remat` when the policy asks for rematerialisation."""
    import flax.linen as nn

    p = None if policy is None else policy.remat_policy
    return module_cls if p is None else nn.remat(module_cls, policy=p, **kwargs)

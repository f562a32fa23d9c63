"""Compute dtype and rematerialisation policy from `config.train`, for tasks to hand to models.

Parameters always stay float32; models cast activations to the compute dtype.
"""

import jax
import jax.numpy as jnp

from netlab.errors import UserError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
REMAT = ("none", "full", "dots", "dots_no_batch")


def compute_dtype(train_cfg):
    if train_cfg.compute_dtype not in DTYPES:
        raise UserError(
            f"train.compute_dtype={train_cfg.compute_dtype!r}; choose one of {', '.join(DTYPES)}"
        )
    return DTYPES[train_cfg.compute_dtype]


def remat_policy(name: str):
    """None (no remat) or a jax.checkpoint policy; `full` saves nothing, `dots` saves matmul outputs."""  # noqa: E501
    if name == "none":
        return None
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    if name == "dots":
        return jax.checkpoint_policies.dots_saveable
    if name == "dots_no_batch":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    raise UserError(f"train.remat={name!r}; choose one of {', '.join(REMAT)}")

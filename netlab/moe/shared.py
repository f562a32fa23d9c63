"""Dense MLPs of MoE models, and shared experts added to the routed ones.

- `DenseMLP`: the dense feed-forward block of the MoE models, with the experts' parameter names
  (`wi`, `wo`, `wg`) so that `netlab.moe.upcycle` can copy it into every expert.
- `RoutedAndSharedMoE`: y = MoE(x) + SharedMLP(x), MaxText's `RoutedAndSharedMoE` shape: a routed
  `MoEMLP` (submodule `routed`) plus `num_shared` always-on experts fused into one dense MLP of
  width num_shared * shared_hidden (submodule `shared`), as in DeepSeekMoE (Dai et al. 2024, §3.2:
  shared expert isolation) and DiT-MoE (Fei et al. 2024, §3.1).
- `mlp_factory(moe)`: the MLP factory a Transformer block takes (`netlab.nn.blocks`) for a model's
  `moe` field dict: `RoutedAndSharedMoE` when it asks for shared experts, else `MoEMLP`;
  `remat(block, policy)`: the block under `nn.remat` (`train.remat`), for the MoE models.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe import experts
from netlab.moe.layer import MoEMLP, routed_fields
from netlab.registry import check_range
from netlab.sharding import axes


class DenseMLP(nn.Module):
    """act(x W_i) [* x W_g] W_o, with `wi` (d, f), `wo` (f, d) [, `wg` (d, f)]."""

    hidden: int
    dtype: Any = jnp.float32
    activation: str = "gelu"
    glu: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        d, dt = x.shape[-1], self.dtype
        init = nn.initializers.lecun_normal()
        wi = self.param("wi", axes.param(init, axes.EMBED, axes.MLP), (d, self.hidden))
        wo = self.param("wo", axes.param(init, axes.MLP, axes.EMBED), (self.hidden, d))
        h = x.astype(dt) @ wi.astype(dt)
        g = None
        if self.glu:
            wg = self.param("wg", axes.param(init, axes.EMBED, axes.MLP), (d, self.hidden))
            g = x.astype(dt) @ wg.astype(dt)
        return experts.activation(h, g, self.activation) @ wo.astype(dt)


class RoutedAndSharedMoE(MoEMLP):
    """MoEMLP fields, plus `num_shared` shared experts of width `shared_hidden` (default:
    `hidden`)."""

    num_shared: int = 1
    shared_hidden: Optional[int] = None

    def check(self, group_size=None, causal=False, expert_devices=1):
        check_range(f"{self.config_key}.num_shared", self.num_shared, 1, None, integer=True)
        if self.shared_hidden is not None:
            check_range(
                f"{self.config_key}.shared_hidden", self.shared_hidden, 1, None, integer=True
            )
        return super().check(group_size, causal, expert_devices)

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = MoEMLP(**routed_fields(self), name="routed")(x, train)
        width = (self.shared_hidden or self.hidden) * self.num_shared
        shared = DenseMLP(width, self.dtype, self.activation, self.glu, name="shared")(x)
        return (y + shared).astype(x.dtype)


def mlp_factory(moe: dict, dtype=jnp.float32):
    """A factory for a block's MLP from a model's `moe` fields (num_shared > 0: shared experts)."""
    moe = dict(moe or {})
    num_shared = moe.pop("num_shared", 0)
    shared_hidden = moe.pop("shared_hidden", None)
    if num_shared:
        return functools.partial(
            RoutedAndSharedMoE,
            num_shared=num_shared,
            shared_hidden=shared_hidden,
            dtype=dtype,
            **moe,
        )
    return functools.partial(MoEMLP, dtype=dtype, **moe)


def remat(block_cls, remat_policy):
    """`block_cls` rematerialised under `remat_policy` (None: unchanged). Blocks are called as
    `block(x, train)`; `train` stays a static Python bool."""
    if remat_policy is None:
        return block_cls
    return nn.remat(block_cls, policy=remat_policy, static_argnums=(2,))


def check_transformer(model, image_shape=None):
    """One-line UserErrors for the Transformer fields of the MoE LM / ViT (`model.<field>`)."""
    for field in ("width", "depth", "num_heads", "mlp_hidden", "moe_every"):
        check_range(f"model.{field}", getattr(model, field), 1, None, integer=True)
    if model.width % model.num_heads:
        raise UserError(
            f"model.width={model.width} is not divisible by model.num_heads={model.num_heads}"
        )
    if image_shape is not None:
        check_range("model.patch", model.patch, 1, None, integer=True)
        h, w = image_shape[:2]
        if h % model.patch or w % model.patch:
            raise UserError(
                f"model.patch={model.patch}: the {h}x{w} images need a patch size dividing both"
            )

"""pMoE: patch-level routing (Chowdhury et al. 2023, "Patch-level Routing in Mixture-of-Experts is
Provably Sample-efficient for Convolutional Neural Networks", §2 eq. 2-3).

The image is cut into patches; each expert's router picks exactly `patches_per_expert` (l) patches
of each image by its own score w_s^T x^(j) and gates them with a softmax over the l selected
patches (the paper's router, `netlab.moe.patch_router`, router="pmoe"; `moe.router` may name
another, e.g. the softmax-over-experts "expert_choice") and processes only those; the outputs are
combined with the gate values. `PatchMoENet` is the paper's two-layer CNN:
the pMoE layer (experts = ReLU convolution filters on patches), averaged over patches, then a linear
classifier.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe.layer import MoEMLP
from netlab.moe.registries import MODELS
from netlab.moe.shared import remat
from netlab.moe.vit import patches
from netlab.registry import check_range


class PatchMoE(nn.Module):
    """pMoE layer: (B, H, W, C) -> (B, N, features) patch outputs (experts saw only their l
    patches). `moe`: further MoEMLP fields (backend, loss weights, ...)."""

    features: int
    num_experts: int = 4
    patch: int = 2
    patches_per_expert: int = 2
    hidden: int = 32
    moe: dict = None
    dtype: Any = jnp.float32

    def layer_fields(self) -> dict:
        """The MoEMLP fields of the layer: the pMoE router keeping l patches, ReLU experts."""
        fields = {"router": "pmoe", "activation": "relu", **dict(self.moe or {})}
        return dict(
            num_experts=self.num_experts,
            hidden=self.hidden,
            expert_capacity=self.patches_per_expert,
            dtype=self.dtype,
            **fields,
        )

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = patches(images, self.patch)
        x = nn.Dense(self.features, dtype=self.dtype, name="embed")(x)
        return MoEMLP(**self.layer_fields(), name="moe")(x, train)


@MODELS.register("pmoe")
class PatchMoENet(nn.Module):
    """pMoE layer -> mean over patches -> linear head."""

    inputs = "images"

    num_classes: int = 10
    features: int = 32
    num_experts: int = 4
    patch: int = 2
    patches_per_expert: int = 4
    hidden: int = 32
    moe: dict = None
    dtype: Any = jnp.float32
    remat_policy: Any = None

    def num_moe_layers(self) -> int:
        return 1

    def check(self, input_shape):
        for field in ("features", "num_experts", "patch", "patches_per_expert", "hidden"):
            check_range(f"model.{field}", getattr(self, field), 1, None, integer=True)
        h, w = input_shape[:2]
        if h % self.patch or w % self.patch:
            raise UserError(
                f"model.patch={self.patch}: the {h}x{w} images need a patch size dividing both"
            )
        n = (h // self.patch) * (w // self.patch)
        if self.patches_per_expert > n:
            raise UserError(
                f"model.patches_per_expert={self.patches_per_expert}: an image has only {n} "
                f"patches of {self.patch}x{self.patch}"
            )

    def moe_layer(self) -> MoEMLP:
        """The MoEMLP the pMoE layer builds (for the task's checks)."""
        fields = PatchMoE(
            self.features,
            self.num_experts,
            self.patch,
            self.patches_per_expert,
            self.hidden,
            self.moe,
            self.dtype,
            parent=None,
        ).layer_fields()
        return MoEMLP(**fields, parent=None)

    @nn.compact
    def __call__(self, images, train: bool = False):
        layer = remat(PatchMoE, self.remat_policy)
        h = layer(
            self.features,
            self.num_experts,
            self.patch,
            self.patches_per_expert,
            self.hidden,
            self.moe,
            self.dtype,
            name="pmoe",
        )(images, train)
        return nn.Dense(self.num_classes, name="head")(h.astype(jnp.float32).mean(1))

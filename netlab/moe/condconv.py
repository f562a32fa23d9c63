"""CondConv (Yang et al. 2019, "CondConv: Conditionally Parameterized Convolutions for Efficient
Inference", eq. 1-2): per example, kernel W(x) = sum_i r_i(x) W_i with r(x) = sigmoid(FC(GAP(x)));
y = W(x) * x. Convolution is linear in the kernel, so this equals sum_i r_i(x) (W_i * x) at the
cost of one convolution. `CondConvNet` is a small CNN whose every convolution is a CondConv (the
paper replaces the convolutions of a CNN); it has no auxiliary loss.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.registries import MODELS
from netlab.moe.shared import remat
from netlab.registry import check_range
from netlab.sharding import axes


class CondConv(nn.Module):
    features: int
    num_experts: int = 4
    kernel_size: tuple = (3, 3)
    padding: str = "SAME"
    dtype: Any = jnp.float32

    def routing(self, x):
        gap = x.astype(jnp.float32).mean((1, 2))
        return jax.nn.sigmoid(nn.Dense(self.num_experts, name="router")(gap))

    @nn.compact
    def __call__(self, x, routing_weights=None):
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        init = nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=(1, 2, 3), out_axis=4, batch_axis=(0,)
        )
        kernels = self.param(
            "kernels",
            axes.param(init, axes.EXPERT, None, None, axes.CONV_IN, axes.CONV_OUT),
            (self.num_experts, kh, kw, cin, self.features),
        )
        bias = self.param(
            "bias", axes.param(nn.initializers.zeros, axes.CONV_OUT), (self.features,)
        )
        r = self.routing(x) if routing_weights is None else routing_weights  # (B, E)
        merged = jnp.einsum("be,ehwio->bhwio", r, kernels).astype(self.dtype)

        def one(xi, ki):
            return jax.lax.conv_general_dilated(
                xi[None], ki, (1, 1), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )[0]

        return jax.vmap(one)(x.astype(self.dtype), merged) + bias.astype(self.dtype)


class CondConvBlock(nn.Module):
    """CondConv -> ReLU [-> 2x2 average pooling]."""

    features: int
    num_experts: int
    kernel_size: int = 3
    pool: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        k = (self.kernel_size, self.kernel_size)
        x = nn.relu(CondConv(self.features, self.num_experts, k, dtype=self.dtype, name="conv")(x))
        return nn.avg_pool(x, (2, 2), (2, 2)) if self.pool else x


@MODELS.register("condconv")
class CondConvNet(nn.Module):
    """CondConv blocks of `channels` (pooling between them) -> global average -> linear head."""

    inputs = "images"

    num_classes: int = 10
    channels: tuple = (16, 32)
    num_experts: int = 4
    kernel_size: int = 3
    dtype: Any = jnp.float32
    remat_policy: Any = None

    def num_moe_layers(self) -> int:
        return 0  # CondConv's routing has no balance or z-loss

    def check(self, input_shape=None):
        check_range("model.num_experts", self.num_experts, 1, None, integer=True)
        check_range("model.kernel_size", self.kernel_size, 1, None, integer=True)
        for c in self.channels:
            check_range("model.channels", c, 1, None, integer=True)

    @nn.compact
    def __call__(self, images, train: bool = False):
        self.check()
        block = remat(CondConvBlock, self.remat_policy)
        x = images
        for i, c in enumerate(self.channels):
            pool = i < len(self.channels) - 1
            x = block(c, self.num_experts, self.kernel_size, pool, self.dtype, name=f"block{i}")(
                x, train
            )
        x = x.astype(jnp.float32).mean((1, 2))
        return nn.Dense(self.num_classes, name="head")(x)

"""Mixtures of experts for CNNs.

- `CondConv` (Yang et al. 2019, "CondConv: Conditionally Parameterized Convolutions for Efficient
  Inference", eq. 1-2): per example, kernel W(x) = Σ_i r_i(x)·W_i with r(x) = sigmoid(FC(GAP(x)));
  y = W(x) * x. Since convolution is linear in the kernel this equals Σ_i r_i(x)·(W_i * x), at the
  cost of one convolution.
- `PatchMoE` (pMoE; Chowdhury et al. 2023, "Patch-level Routing in Mixture-of-Experts is Provably
  Sample-efficient for Convolutional Neural Networks", §2 eq. 2-3): the image is cut into patches;
  each expert's router picks exactly `patches_per_expert` (l) patches of each image (expert-choice
  routing over patches) and processes only those; the outputs are combined with the gate values.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.layer import MoEMLP
from netlab.sharding import axes


class CondConv(nn.Module):
    features: int
    num_experts: int = 4
    kernel_size: tuple = (3, 3)
    padding: str = "SAME"

    def routing(self, x):
        return jax.nn.sigmoid(nn.Dense(self.num_experts, name="router")(x.astype(jnp.float32).mean((1, 2))))

    @nn.compact
    def __call__(self, x, routing_weights=None):
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(1, 2, 3), out_axis=4,
                                                batch_axis=(0,))
        kernels = self.param("kernels", axes.param(init, axes.EXPERT, None, None, axes.CONV_IN, axes.CONV_OUT),
                             (self.num_experts, kh, kw, cin, self.features))
        bias = self.param("bias", axes.param(nn.initializers.zeros, axes.CONV_OUT), (self.features,))
        r = self.routing(x) if routing_weights is None else routing_weights          # (B, E)
        merged = jnp.einsum("be,ehwio->bhwio", r, kernels)

        def one(xi, ki):
            return jax.lax.conv_general_dilated(xi[None], ki, (1, 1), self.padding,
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]

        return jax.vmap(one)(x, merged) + bias


def patches(images, p: int):
    """(B, H, W, C) -> (B, H/p * W/p, p*p*C) non-overlapping patches, row-major."""
    b, h, w, c = images.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not divisible into {p}x{p} patches; choose a patch size dividing both")
    return images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)


class PatchMoE(nn.Module):
    """pMoE layer: (B, H, W, C) -> (B, N, features) patch outputs (experts saw only their l patches)."""
    features: int
    num_experts: int = 4
    patch: int = 2
    patches_per_expert: int = 2
    hidden: int = 32
    backend: str = "capacity"

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = patches(images, self.patch)
        x = nn.Dense(self.features, name="embed")(x)
        return MoEMLP(num_experts=self.num_experts, hidden=self.hidden, router="expert_choice", backend=self.backend,
                      expert_capacity=self.patches_per_expert, activation="relu", name="moe")(x, train)

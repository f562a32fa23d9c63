"""Multi-head self-attention through `jax.nn.dot_product_attention`.

Vaswani et al. 2017, eq. 1: softmax(Q K^T / sqrt(d_k)) V per head. The score/softmax/value product
goes through `jax.nn.dot_product_attention`, so on a GPU XLA may pick cuDNN's fused (flash)
attention (`implementation="cudnn"` forces it, `"xla"` forbids it); elsewhere it is the XLA
reference, whose logits and softmax are float32 even under bfloat16 compute.

The projections keep explicit (embed, 3, heads, kv) and (heads, kv, embed) weights so every weight
axis carries a logical name for sharding.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.sharding import axes

_qkv_init = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2, 3)
)
_out_init = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2
)


class Attention(nn.Module):
    """Self-attention on (batch, length, embed) -> (batch, length, embed)."""

    num_heads: int
    dtype: Any = jnp.float32
    causal: bool = False
    implementation: Any = None  # None (XLA chooses) | "xla" | "cudnn"

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        if d % self.num_heads:
            raise ValueError(
                f"width {d} is not divisible by num_heads={self.num_heads}; pick a divisor"
            )
        head = d // self.num_heads
        pdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        w_qkv = self.param(
            "qkv",
            axes.param(_qkv_init, axes.EMBED, None, axes.HEADS, axes.KV),
            (d, 3, self.num_heads, head),
            pdt,
        )
        b_qkv = self.param(
            "qkv_bias",
            axes.param(nn.initializers.zeros, None, axes.HEADS, axes.KV),
            (3, self.num_heads, head),
            pdt,
        )
        qkv = jnp.einsum("bnd,dthk->bnthk", x.astype(self.dtype), w_qkv.astype(self.dtype))
        qkv = qkv + b_qkv.astype(self.dtype)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = axes.constrain(q, axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)
        out = jax.nn.dot_product_attention(
            q, k, v, is_causal=self.causal, implementation=self.implementation
        )
        w_out = self.param(
            "out",
            axes.param(_out_init, axes.HEADS, axes.KV, axes.EMBED),
            (self.num_heads, head, d),
            pdt,
        )
        b_out = self.param("out_bias", axes.param(nn.initializers.zeros, axes.EMBED), (d,), pdt)
        return jnp.einsum("bqhk,hkd->bqd", out, w_out.astype(self.dtype)) + b_out.astype(self.dtype)

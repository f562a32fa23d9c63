"""A decoder-only byte-level MoE language model (pre-LayerNorm Transformer, MoE MLPs).

Layer i uses an MoE MLP when `i % moe_every == moe_every - 1` (every layer for moe_every=1),
otherwise a dense MLP. Returns logits (B, L, 256) and the per-MoE-layer aux dicts
(see `netlab.moe.layer.MoEMLP`). Each sequence is one routing group.

The attention block here (`SelfAttention`, also used by ViT-MoE) is a small local one: netlab/nn had no attention block when this
was written (dedupe into netlab/nn later).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.layer import MoEMLP
from netlab.sharding import axes


class SelfAttention(nn.Module):
    """Multi-head self-attention, causal by default (the LM); causal=False for ViT/DiT encoders."""
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    causal: bool = True

    @nn.compact
    def __call__(self, x):
        b, l, d = x.shape
        h = self.num_heads
        if d % h:
            raise ValueError(f"width {d} is not divisible by num_heads={h}; pick num_heads dividing {d}")
        wqkv = self.param("qkv", axes.param(nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                                             in_axis=0, out_axis=(1, 2, 3)),
                                            axes.EMBED, None, axes.HEADS, axes.KV), (d, 3, h, d // h))
        wo = self.param("out", axes.param(nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                                           in_axis=(0, 1), out_axis=2),
                                          axes.HEADS, axes.KV, axes.EMBED), (h, d // h, d))
        qkv = jnp.einsum("bld,dthk->tblhk", x.astype(self.dtype), wqkv.astype(self.dtype))
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = axes.constrain(q, axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)
        s = jnp.einsum("bqhk,bthk->bhqt", q, k).astype(jnp.float32) / jnp.sqrt(d // h).astype(jnp.float32)
        if self.causal:
            s = jnp.where(jnp.tril(jnp.ones((l, l), bool)), s, -1e30)
        p = jax.nn.softmax(s, axis=-1).astype(self.dtype)
        o = jnp.einsum("bhqt,bthk->bqhk", p, v)
        return jnp.einsum("bqhk,hkd->bqd", o, wo.astype(self.dtype))


class DenseMLP(nn.Module):
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        wi = self.param("wi", axes.param(nn.initializers.lecun_normal(), axes.EMBED, axes.MLP), (d, self.hidden))
        wo = self.param("wo", axes.param(nn.initializers.lecun_normal(), axes.MLP, axes.EMBED), (self.hidden, d))
        return jax.nn.gelu(x.astype(self.dtype) @ wi.astype(self.dtype)) @ wo.astype(self.dtype)


class LayerNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", axes.param(nn.initializers.ones, axes.NORM), (d,))
        bias = self.param("bias", axes.param(nn.initializers.zeros, axes.NORM), (d,))
        xf = x.astype(jnp.float32)
        mu = xf.mean(-1, keepdims=True)
        var = jnp.square(xf - mu).mean(-1, keepdims=True)
        return ((xf - mu) * jax.lax.rsqrt(var + 1e-6) * scale + bias).astype(x.dtype)


class MoELM(nn.Module):
    vocab: int = 256
    max_len: int = 128
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_hidden: int = 128
    moe_every: int = 1
    moe: dict = None               # MoEMLP keyword arguments (num_experts, hidden, k, router, backend, ...)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        b, l = tokens.shape
        if l > self.max_len:
            raise ValueError(f"sequence length {l} exceeds max_len={self.max_len}; raise model.max_len")
        embed = self.param("embed", axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                           (self.vocab, self.width))
        pos = self.param("pos", axes.param(nn.initializers.normal(0.02), None, axes.EMBED), (self.max_len, self.width))
        x = (embed[tokens] + pos[:l]).astype(self.dtype)
        x = axes.constrain(x, axes.BATCH, axes.LENGTH, axes.EMBED)
        aux = []
        moe_kwargs = dict(self.moe or {})
        for i in range(self.depth):
            x = x + SelfAttention(self.num_heads, self.dtype, name=f"attn_{i}")(LayerNorm(name=f"ln1_{i}")(x))
            h = LayerNorm(name=f"ln2_{i}")(x)
            if i % self.moe_every == self.moe_every - 1:
                y, a = MoEMLP(dtype=self.dtype, name=f"moe_{i}", **moe_kwargs)(h, train)
                aux.append(a)
            else:
                y = DenseMLP(self.mlp_hidden, self.dtype, name=f"mlp_{i}")(h)
            x = axes.constrain(x + y, axes.BATCH, axes.LENGTH, axes.EMBED)
        x = LayerNorm(name="ln_f")(x)
        logits = jnp.einsum("bld,vd->blv", x.astype(jnp.float32), embed.astype(jnp.float32))
        return logits, aux

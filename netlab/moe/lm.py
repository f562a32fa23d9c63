"""A decoder-only byte-level MoE language model (pre-LayerNorm Transformer, MoE MLPs).

Layer i uses an MoE MLP when `i % moe_every == moe_every - 1` (every layer for moe_every=1),
otherwise a dense MLP. Returns logits (B, L, 256) and the per-MoE-layer aux dicts
(see `netlab.moe.layer.MoEMLP`). Each sequence is one routing group.

Attention and LayerNorm come from netlab.nn.layers (shared with the DiT); the dense MLP here keeps
the `wi`/`wo` names of the experts so that `netlab.moe.upcycle` can copy it into them.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.layer import MoEMLP
from netlab.nn import layers
from netlab.sharding import axes


class DenseMLP(nn.Module):
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        wi = self.param("wi", axes.param(nn.initializers.lecun_normal(), axes.EMBED, axes.MLP), (d, self.hidden))
        wo = self.param("wo", axes.param(nn.initializers.lecun_normal(), axes.MLP, axes.EMBED), (self.hidden, d))
        return jax.nn.gelu(x.astype(self.dtype) @ wi.astype(self.dtype)) @ wo.astype(self.dtype)


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
        if moe_kwargs.get("router") in ("expert_choice", "soft"):
            raise ValueError(f"router={moe_kwargs['router']!r} mixes tokens across positions and leaks future tokens "
                             f"in a causal LM; use router='topk' or 'sparsemixer'")
        for i in range(self.depth):
            x = x + layers.Attention(self.num_heads, self.dtype, causal=True, name=f"attn_{i}")(
                layers.layer_norm(self.dtype, name=f"ln1_{i}")(x))
            h = layers.layer_norm(self.dtype, name=f"ln2_{i}")(x)
            if i % self.moe_every == self.moe_every - 1:
                y, a = MoEMLP(dtype=self.dtype, name=f"moe_{i}", **moe_kwargs)(h, train)
                aux.append(a)
            else:
                y = DenseMLP(self.mlp_hidden, self.dtype, name=f"mlp_{i}")(h)
            x = axes.constrain(x + y, axes.BATCH, axes.LENGTH, axes.EMBED)
        x = layers.layer_norm(self.dtype, name="ln_f")(x)
        logits = jnp.einsum("bld,vd->blv", x.astype(jnp.float32), embed.astype(jnp.float32))
        return logits, aux

"""DiT-MoE block (Fei et al. 2024, "Scaling Diffusion Transformers to 16 Billion Parameters", §3.1-3.2).

A DiT block with adaLN-Zero conditioning whose MLP is a sparse MoE:

    x += g_msa · Attn(modulate(LN(x), shift_msa, scale_msa))
    u  = modulate(LN(x), shift_mlp, scale_mlp)
    x += g_mlp · (Σ_{top-2} p_e · SwiGLU_e(u) + SwiGLU_shared(u))

with (shift, scale, g) = Linear(SiLU(c)) initialised to zero (the block starts as the identity),
softmax top-2 routing WITHOUT renormalising the two weights, 2 shared experts, and the expert-level
balance loss α·Σ_e P̄_e·(E·ce_e) (`netlab.moe.losses.dit_moe_balance`, α = 0.01 in the paper),
reported as aux["load_balance"]. Non-causal, so expert choice may replace top-2 here.
The attention is netlab.moe.lm.SelfAttention(causal=False) until netlab/nn ships a shared one.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.layer import MoEMLP
from netlab.moe.lm import SelfAttention
from netlab.sharding import axes


def _ln(x):
    xf = x.astype(jnp.float32)
    return ((xf - xf.mean(-1, keepdims=True)) * jax.lax.rsqrt(xf.var(-1, keepdims=True) + 1e-6)).astype(x.dtype)


def modulate(x, shift, scale):
    return x * (1.0 + scale[:, None]) + shift[:, None]


class DiTMoEBlock(nn.Module):
    num_heads: int
    num_experts: int = 8
    hidden: int = 64
    k: int = 2
    num_shared: int = 2
    router: str = "topk"
    backend: str = "capacity"
    capacity_factor: float = None
    eval_capacity_factor: float = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, c, train: bool = False):
        d = x.shape[-1]
        mod = self.param("adaln", axes.param(nn.initializers.zeros, axes.EMBED, None), (c.shape[-1], 6 * d))
        bias = self.param("adaln_bias", axes.param(nn.initializers.zeros, None), (6 * d,))
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(jax.nn.silu(c) @ mod + bias, 6, axis=-1)
        x = x + gate_a[:, None] * SelfAttention(self.num_heads, self.dtype, causal=False, name="attn")(
            modulate(_ln(x), shift_a, scale_a))
        u = modulate(_ln(x), shift_m, scale_m)
        y, aux = MoEMLP(num_experts=self.num_experts, hidden=self.hidden, k=self.k, router=self.router,
                        backend=self.backend, renormalize=False, activation="silu", glu=True,
                        num_shared=self.num_shared, capacity_factor=self.capacity_factor,
                        eval_capacity_factor=self.eval_capacity_factor, dtype=self.dtype, name="moe")(u, train)
        return x + gate_m[:, None] * y, aux

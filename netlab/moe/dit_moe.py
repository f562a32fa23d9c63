"""DiT-MoE (Fei et al. 2024, "Scaling Diffusion Transformers to 16 Billion Parameters", §3.1-3.2).

The diffusion package's DiT (netlab.diffusion.dit, Peebles & Xie 2023) with sparse MoE MLPs in
every `moe_every`-th block:

    x += g_msa · Attn(modulate(LN(x), shift_msa, scale_msa))
    u  = modulate(LN(x), shift_mlp, scale_mlp)
    x += g_mlp · (Σ_{top-2} p_e · SwiGLU_e(u) + SwiGLU_shared(u))

adaLN-Zero modulation (zero-initialised: every block starts as the identity), softmax top-2
routing WITHOUT renormalising the two weights, `num_shared` (2 in the paper) shared experts, and the
expert-level balance loss α·Σ_e P̄_e·(E·ce_e) (`netlab.moe.losses.dit_moe_balance`, α = 0.01),
reported as aux["load_balance"]. The blocks are not causal, so expert choice may replace top-2.
`DiTMoE` returns what `DiT` returns (so the diffusion samplers run unchanged) and sows each MoE
block's aux dict into the `moe_aux` collection.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.diffusion.dit import DiT
from netlab.moe.layer import MoEMLP
from netlab.nn import layers
from netlab.sharding import axes


class DiTMoEBlock(nn.Module):
    width: int
    num_heads: int
    num_experts: int = 8
    hidden: int = 64
    k: int = 2
    num_shared: int = 2
    router: str = "topk"
    backend: str = "capacity"
    capacity_factor: Any = None
    eval_capacity_factor: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c, train: bool = False):
        mod = layers.dense(6 * self.width, axes.EMBED, axes.MLP, jnp.float32, kernel_init=layers.zeros,
                           name="adaLN")(nn.silu(c))
        s1, sc1, g1, s2, sc2, g2 = jnp.split(mod.astype(self.dtype), 6, axis=-1)
        h = layers.modulate(layers.layer_norm(self.dtype, affine=False, name="ln1")(x), s1, sc1)
        x = x + g1[:, None] * layers.Attention(self.num_heads, self.dtype, name="attn")(h)
        u = layers.modulate(layers.layer_norm(self.dtype, affine=False, name="ln2")(x), s2, sc2)
        y, aux = MoEMLP(num_experts=self.num_experts, hidden=self.hidden, k=self.k, router=self.router,
                        backend=self.backend, renormalize=False, activation="silu", glu=True,
                        num_shared=self.num_shared, capacity_factor=self.capacity_factor,
                        eval_capacity_factor=self.eval_capacity_factor, dtype=self.dtype, name="moe")(u, train)
        return axes.constrain(x + g2[:, None] * y, axes.BATCH, axes.LENGTH, axes.EMBED), aux


class DiTMoE(DiT):
    """DiT whose every `moe_every`-th block is a DiTMoEBlock (MoE fields as in DiTMoEBlock)."""
    moe_every: int = 2
    moe: dict = None
    train: bool = False

    def apply_block(self, i, h, c):
        if i % self.moe_every != self.moe_every - 1:
            return super().apply_block(i, h, c)
        h, aux = DiTMoEBlock(self.width, self.num_heads, dtype=self.dtype, name=f"block{i}",
                             **dict(self.moe or {}))(h, c, self.train)
        self.sow("moe_aux", f"aux{i}", aux)
        return h

"""A reversible DiT trunk: Mangalam, Fan, Li, Wu, Xiong, Feichtenhofer & Malik 2022, "Reversible
Vision Transformers" (CVPR), Sec. 3, with DiT's adaLN-Zero conditioning (Peebles & Xie 2023).

Rev-ViT turns a Transformer block into a RevNet coupling (Gomez et al. 2017) on two residual
streams of full width: F = the attention branch, G = the MLP branch,

    I1 = X1 + F(X2),        I2 = X2 + G(I1),

so the backward pass recomputes each block's inputs from its outputs
(`netlab.nn.reversible.reversible_scan`: a reverse scan, activation memory flat in depth). Here
each branch is DiT's adaLN-Zero branch: F(x) = gate1 * Attn(modulate(LN(x), shift1, scale1)),
G(x) = gate2 * MLP(modulate(LN(x), shift2, scale2)), the shift/scale/gate regressed from the
conditioning c by a zero-initialised linear layer per branch, so every block starts as the
identity, as in DiT.

The conditioning enters F and G as an argument that the couplings do not change; to keep the
custom_vjp's interface (parameters and the two streams), c rides with each block's parameters,
broadcast over the depth axis ((depth, B, width), small next to the activations); its gradient
is the sum over blocks, as ordinary backprop gives.

Streams: both start as the patch embedding h (Rev-ViT duplicates the input) and the trunk returns
their mean (Rev-ViT concatenates them before its head; the mean keeps DiT's width and makes the
freshly initialised trunk the identity). `reversible=False` runs the same network through
ordinary autodiff (`plain_scan`), the reference of `tests/nn/test_rev_dit.py` and of the memory
rows in bench/results/reversible_memory.md. Dense MLPs only (an MoE layer's auxiliary losses
cannot leave the custom_vjp) and no dropout.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn import layers, reversible
from netlab.nn.attention import Attention
from netlab.sharding import axes


class AdaLNBranch(nn.Module):
    """gate * inner(modulate(LN(x), shift, scale)) with (shift, scale, gate) = Dense(silu(c))."""

    width: int
    num_heads: int
    hidden: int  # 0: the attention branch, else the MLP branch with this many hidden units
    dtype: Any = jnp.float32
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x, c):
        pdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        mod = layers.dense(
            3 * self.width, axes.EMBED, axes.MLP, pdt, kernel_init=layers.zeros, name="adaLN"
        )(nn.silu(c))
        shift, scale, gate = jnp.split(mod.astype(self.dtype), 3, axis=-1)
        h = layers.modulate(
            layers.layer_norm(self.dtype, affine=False, epsilon=self.eps)(x), shift, scale
        )
        if self.hidden:
            h = layers.Mlp(self.hidden, self.dtype, name="mlp")(h)
        else:
            h = Attention(self.num_heads, self.dtype, name="attn")(h)
        return gate[:, None] * h


def pure_apply(module):
    """`module.apply` as a pure function of ((params, c), h), the form the reversible scans take
    (also used by netlab/nn/irevnet_dit.py)."""

    def fn(p, h):
        params, c = p
        return module.apply({"params": params}, h, c)

    return fn


class ReversibleDiTStack(nn.Module):
    """(B, T, width), c (B, width) -> (B, T, width): `depth` reversible adaLN-Zero blocks."""

    width: int
    num_heads: int
    depth: int
    mlp_hidden: int
    dtype: Any = jnp.float32
    mlp_norm_eps: float = 1e-6
    reversible: bool = True

    def _branches(self):
        f = AdaLNBranch(self.width, self.num_heads, 0, self.dtype, parent=None)
        g = AdaLNBranch(
            self.width, self.num_heads, self.mlp_hidden, self.dtype, self.mlp_norm_eps, parent=None
        )
        return f, g

    @nn.compact
    def __call__(self, h, c):
        f, g = self._branches()
        params = []
        for i in range(self.depth):
            pf = self.param(f"F{i}", lambda k: f.init(k, h, c)["params"])
            pg = self.param(f"G{i}", lambda k: g.init(k, h, c)["params"])
            params.append((nn.unbox(pf), nn.unbox(pg)))
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
        cs = jnp.broadcast_to(c, (self.depth,) + c.shape)
        stacked = ((stacked[0], cs), (stacked[1], cs))
        run = reversible.reversible_scan if self.reversible else reversible.plain_scan
        y1, y2 = run((pure_apply(f), pure_apply(g)), stacked, h, h)
        return axes.constrain((y1 + y2) / 2, axes.BATCH, axes.LENGTH, axes.EMBED)


def stack(width, num_heads, depth, mlp_ratio, dtype, mlp_norm_eps, reversible_backward=True):
    """The factory DiT uses for `model.trunk = "reversible"`."""
    return functools.partial(
        ReversibleDiTStack,
        width,
        num_heads,
        depth,
        int(width * mlp_ratio),
        dtype,
        mlp_norm_eps,
        reversible_backward,
    )

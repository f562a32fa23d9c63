"""A decoder-only byte-level MoE language model: pre-LN Transformer blocks with MoE MLPs.

Block i (`netlab.nn.blocks.PreLNBlock`, causal) takes an MoE MLP (`netlab.moe.shared.mlp_factory`
of the `moe` fields) when `i % moe_every == moe_every - 1` (every block for moe_every=1), else the
dense `DenseMLP`, whose `wi`/`wo` names let `netlab.moe.upcycle` copy it into the experts. Each
sequence is one routing group. The MoE layers are built with `causal=True`: capacity slots are
filled in token order, choice by choice (`netlab.moe.routing.slot_positions`), so whether a token
keeps its experts depends only on earlier tokens; routers that mix positions (expert choice, Soft
MoE, SMEAR) and Batch Priority Routing are one-line UserErrors.
Input and output embeddings are tied. Returns logits (B, L, vocab); the MoE layers' losses and
metrics go to the `netlab.nn.aux` collections. With `remat_policy` every block is rematerialised
(`nn.remat`).

With `pipeline_microbatches` M >= 1 the blocks are one `netlab.sharding.pipeline.Stack`
(parameters stacked on a leading `layers` axis under `blocks/layers`), run as a GPipe pipeline of
M microbatches on a mesh with `stage` > 1, else as a scan. Dense blocks only: set
`moe_every` > `depth` (an MoE layer's aux losses are not collected through the pipeline).
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe.layer import is_moe_layer
from netlab.moe.registries import MODELS
from netlab.moe.shared import DenseMLP, check_transformer, mlp_factory, remat
from netlab.nn import layers
from netlab.nn.blocks import PreLNBlock
from netlab.sharding import axes, pipeline


@MODELS.register("lm")
class MoELM(nn.Module):
    inputs = "tokens"

    vocab: int = 256
    max_len: int = 128
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_hidden: int = 128
    moe_every: int = 1
    moe: dict = None  # MoEMLP fields (num_experts, hidden, k, router, backend, ...)
    dtype: Any = jnp.float32
    remat_policy: Any = None
    pipeline_microbatches: int = 0  # >= 1: stacked dense blocks, pipelined over mesh axis `stage`

    def check(self, input_shape=None):
        check_transformer(self)
        if self.pipeline_microbatches < 0 or (self.pipeline_microbatches and self.num_moe_layers()):
            raise UserError(
                f"model.pipeline_microbatches={self.pipeline_microbatches}: use 0, or a number of "
                f"microbatches >= mesh.stage with dense blocks (model.moe_every > model.depth)"
            )

    def num_moe_layers(self) -> int:
        return sum(is_moe_layer(i, self.moe_every) for i in range(self.depth))

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        b, l = tokens.shape
        if l > self.max_len:
            raise ValueError(f"sequence length {l} exceeds max_len={self.max_len}; raise max_len")
        embed = self.param(
            "embed",
            axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
            (self.vocab, self.width),
        )
        pos = self.param(
            "pos",
            axes.param(nn.initializers.normal(0.02), None, axes.EMBED),
            (self.max_len, self.width),
        )
        x = (embed[tokens] + pos[:l]).astype(self.dtype)
        x = axes.constrain(x, axes.BATCH, axes.LENGTH, axes.EMBED)
        sparse = mlp_factory(dict(self.moe or {}, causal=True), self.dtype)
        if self.num_moe_layers():
            sparse(parent=None).check(group_size=l, causal=True)  # no router that sees the future
        dense = functools.partial(DenseMLP, self.mlp_hidden, self.dtype)
        if self.pipeline_microbatches:
            x = pipeline.Stack(
                functools.partial(PreLNBlock, self.num_heads, dense, self.dtype, causal=True),
                self.depth,
                self.pipeline_microbatches,
                static=(train,),
                remat_policy=self.remat_policy,
                name="blocks",
            )(x)
        block = remat(PreLNBlock, self.remat_policy)
        for i in range(0 if self.pipeline_microbatches else self.depth):
            mlp = sparse if is_moe_layer(i, self.moe_every) else dense
            x = block(self.num_heads, mlp, self.dtype, causal=True, name=f"block{i}")(x, train)
        x = layers.layer_norm(self.dtype, name="ln_f")(x)
        return jnp.einsum("bld,vd->blv", x.astype(jnp.float32), embed.astype(jnp.float32))

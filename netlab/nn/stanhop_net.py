"""STanHop-Net: Wu, Hu, Hsu, Kuo, Liu & Liu 2024, "STanHop: Sparse Tandem Hopfield Model for
Memory-Enhanced Time Series Prediction" (ICLR), Sec. 3-4 / Fig. 1: the full forecaster around the
STanHop-Block of `netlab.nn.stanhop`.

(B, window, C) -> (B, horizon, C), in the Crossformer layout (Zhang & Yan 2023) the paper builds
on:

1. Patch embedding: each series' window cut into segments of P steps, each embedded linearly to
   d, plus a learned position embedding per segment: z (B, C, L = window / P, d).
2. Encoder, multi-resolution: `depth` STanHop-Blocks; before every block but the first a
   coarse-graining layer merges `merge` adjacent segments (concatenate, LayerNorm, linear back
   to d; the last segment repeated when L is not a multiple), so block l sees L / merge^l
   segments. A block is the tandem sparse Hopfield (`stanhop.TandemBlock`: GSH over time per
   series, then GSH across series through router queries; learnable alpha entmax, Sec. 3.1-3.2)
   followed by the external memory module (`stanhop.MemoryPlugin`, Sec. 3.3): `memory="tune"`
   retrieves from `num_memories` learned slots (Tune-and-Play), `memory="plug"` from memory
   patterns passed at call time (Plug-and-Play, e.g. embeddings of other windows), `"none"`
   leaves the block the plain tandem block.
3. Decoder: learned queries, one per output segment (horizon / P, rounded up), go through one
   decoder layer per encoder resolution: a tandem block on the queries, GSH retrieval from that
   resolution's encoder output (per series, queries = decoder segments, stored patterns = encoder
   segments) with add-norm-MLP, and a linear map of each decoder segment to its P values; the
   forecast is the sum over resolutions (Crossformer's hierarchical decoder with GSH in place of
   its attention).

Deliberate differences: the position embeddings (encoder and decoder) are shared by all series
instead of one per series, so the network is equivariant to permuting the series (the property
tests/nn/test_stanhop_net.py checks; the paper's cross-series stage is, its per-series embeddings
are not), and the memory module sits after the tandem stage of each block (the paper's text does
not pin its position; the authors' code has no memory modules).
"""

import flax.linen as nn
import jax.numpy as jnp

from netlab.nn import stanhop

MEMORIES = ("none", "tune", "plug")


class SegmentMerge(nn.Module):
    """Coarse-graining: (B, C, L, d) -> (B, C, ceil(L / merge), d)."""

    merge: int = 2

    @nn.compact
    def __call__(self, z):
        b, c, length, d = z.shape
        pad = -length % self.merge
        if pad:
            z = jnp.concatenate([z, jnp.repeat(z[:, :, -1:], pad, axis=2)], axis=2)
        z = z.reshape(b, c, (length + pad) // self.merge, self.merge * d)
        return nn.Dense(d, name="proj")(nn.LayerNorm(name="norm")(z))


class STanHopBlock(nn.Module):
    """The tandem sparse Hopfield block and the external memory module (Fig. 1)."""

    num_heads: int = 2
    routers: int = 2
    memory: str = "none"  # none | tune | plug
    num_memories: int = 8

    @nn.compact
    def __call__(self, z, memory=None):
        z = stanhop.TandemBlock(self.num_heads, self.routers, name="tandem")(z)
        if self.memory == "none":
            return z
        if self.memory == "plug" and memory is None:
            raise ValueError("STanHopBlock(memory='plug') needs memory patterns at call time")
        plugin = stanhop.MemoryPlugin(self.num_memories, self.num_heads, name="memory")
        return plugin(z, memory if self.memory == "plug" else None)


class DecoderLayer(nn.Module):
    """Decoder queries (B, C, L_out, d) and one encoder resolution -> (queries, segment values)."""

    segment: int
    num_heads: int = 2
    routers: int = 2

    @nn.compact
    def __call__(self, y, enc):
        d = y.shape[-1]
        y = stanhop.TandemBlock(self.num_heads, self.routers, name="tandem")(y)
        y = stanhop._AddNormMLP(name="cross_out")(y, stanhop.GSH(d, self.num_heads)(y, enc))
        return y, nn.Dense(self.segment, name="predict")(y)


class STanHopNet(nn.Module):
    """(B, window, C) -> (B, horizon, C); `memory` (M, d) or (B, C, M, d) for memory="plug"."""

    horizon: int
    segment: int
    d_model: int = 32
    depth: int = 2
    merge: int = 2
    num_heads: int = 2
    routers: int = 2
    memory: str = "none"
    num_memories: int = 8

    @nn.compact
    def __call__(self, x, memory=None):
        b, window, c = x.shape
        p = self.segment
        z = jnp.swapaxes(x, 1, 2).reshape(b, c, window // p, p)
        pos = nn.initializers.normal(0.02)
        z = nn.Dense(self.d_model, name="embed")(z)
        z = z + self.param("enc_pos", pos, (window // p, self.d_model))
        encoded = []
        for i in range(self.depth):
            if i:
                z = SegmentMerge(self.merge, name=f"merge{i}")(z)
            block = STanHopBlock(
                self.num_heads, self.routers, self.memory, self.num_memories, name=f"block{i}"
            )
            z = block(z, memory)
            encoded.append(z)
        out_len = -(-self.horizon // p)
        y = self.param("dec_pos", pos, (out_len, self.d_model))
        y = jnp.broadcast_to(y, (b, c, out_len, self.d_model))
        forecast = 0.0
        for i, enc in enumerate(encoded):
            y, pred = DecoderLayer(p, self.num_heads, self.routers, name=f"decoder{i}")(y, enc)
            forecast = forecast + pred
        forecast = forecast.reshape(b, c, out_len * p)[:, :, : self.horizon]
        return jnp.swapaxes(forecast, 1, 2)

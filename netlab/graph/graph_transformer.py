"""DiGress's dense graph transformer (Vignac et al., ICLR 2023, Sec. 4 and App. B.1).

Dense layout: node features X [B, n, dx], edge features E [B, n, n, de], global features y [B, dy]
and a node mask [B, n] (padding nodes and their edges are zeroed after every block). One
:class:`GraphTransformerLayer` updates all three:

- attention with per-channel scores ``Y_ij = Q_i ⊙ K_j / sqrt(d_head)`` [B, n, n, H, d_head];
- FiLM of edges into the scores, ``Y ← Y ⊙ (E W_mul + 1) + E W_add``;
- the new edge features are the (y-FiLMed) scores, ``E' = W_e (y W_1 + (y W_2 + 1) ⊙ Y)``;
- node update: softmax of Y over the neighbours j separately per channel (padding excluded),
  weighted sum of V, y-FiLM, output map;
- global update: ``y' = W_y y + pool(X) + pool(E)`` then an MLP, where pool is PNA-style
  (Corso et al. 2020): [mean, min, max, std] over real nodes (resp. real node pairs) and a linear
  map, followed by residual + LayerNorm + feed-forward blocks for X, E and y (post-norm, as the
  authors' ``XEyTransformerLayer``).

Where we differ from the authors' ``transformer_model.py``: their pooling averages over padding
rows too; here every statistic is masked, so padding never changes a real output.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def masked_pool(x, mask, axes):
    """PNA-style [mean, min, max, std] of x [B, ..., d] over ``axes`` where mask [B, ...] holds."""
    m = mask[..., None].astype(x.dtype)
    count = jnp.maximum(m.sum(axes), 1.0)
    mean = (x * m).sum(axes) / count
    var = (jnp.square(x - jnp.expand_dims(mean, axes)) * m).sum(axes) / count
    big = jnp.finfo(x.dtype).max
    lo = jnp.where(m > 0, x, big).min(axes)
    hi = jnp.where(m > 0, x, -big).max(axes)
    empty = (m.sum(axes) == 0)[..., :1]
    lo, hi = jnp.where(empty, 0.0, lo), jnp.where(empty, 0.0, hi)
    return jnp.concatenate([mean, lo, hi, jnp.sqrt(var + 1e-12)], -1)


def edge_mask(node_mask):
    """[B, n, n]: both endpoints real (the diagonal included)."""
    return node_mask[:, :, None] & node_mask[:, None, :]


class FiLM(nn.Module):
    """``a(y) + (b(y) + 1) ⊙ h`` with y [B, dy] broadcast over h's middle axes."""

    features: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, y):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        add, mul = nn.Dense(self.features, **kw)(y), nn.Dense(self.features, **kw)(y)
        shape = (y.shape[0],) + (1,) * (h.ndim - 2) + (self.features,)
        return add.reshape(shape) + (mul.reshape(shape) + 1.0) * h


class NodeEdgeBlock(nn.Module):
    """The attention block: new (X, E, y) from (X, E, y) before the residual/LayerNorm."""

    dx: int
    de: int
    dy: int
    heads: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, e, y, node_mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        Dense = lambda f, name=None: nn.Dense(f, name=name, **kw)  # noqa: E731
        b, n, _ = x.shape
        h, dh = self.heads, self.dx // self.heads
        xm = node_mask[..., None].astype(x.dtype)
        em = edge_mask(node_mask)[..., None].astype(x.dtype)
        q = (Dense(self.dx, "q")(x) * xm).reshape(b, n, 1, h, dh)
        k = (Dense(self.dx, "k")(x) * xm).reshape(b, 1, n, h, dh)
        v = (Dense(self.dx, "v")(x) * xm).reshape(b, 1, n, h, dh)
        scores = q * k / jnp.sqrt(jnp.asarray(dh, x.dtype))  # [B, n, n, H, dh]
        e_mul = (Dense(self.dx, "e_mul")(e) * em).reshape(b, n, n, h, dh)
        e_add = (Dense(self.dx, "e_add")(e) * em).reshape(b, n, n, h, dh)
        scores = scores * (e_mul + 1.0) + e_add
        new_e = FiLM(self.dx, name="y_e", **kw)(scores.reshape(b, n, n, self.dx), y)
        new_e = Dense(self.de, "e_out")(new_e) * em
        valid = edge_mask(node_mask)[..., None, None]
        logits = jnp.where(valid, scores, -1e9)
        attn = jax.nn.softmax(logits, axis=2) * valid
        agg = (attn * v).sum(2).reshape(b, n, self.dx)
        new_x = Dense(self.dx, "x_out")(FiLM(self.dx, name="y_x", **kw)(agg, y)) * xm
        pooled_x = Dense(self.dy, "x_to_y")(masked_pool(x, node_mask, 1))
        pooled_e = Dense(self.dy, "e_to_y")(masked_pool(e, edge_mask(node_mask), (1, 2)))
        new_y = Dense(self.dy, "y_y")(y) + pooled_x + pooled_e
        new_y = Dense(self.dy)(nn.relu(Dense(self.dy)(new_y)))
        return new_x, new_e, new_y


class GraphTransformerLayer(nn.Module):
    """NodeEdgeBlock + residual + LayerNorm, then a feed-forward block per stream."""

    dx: int
    de: int
    dy: int
    heads: int = 4
    ff_mult: int = 2
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, e, y, node_mask, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        nx_, ne, ny = NodeEdgeBlock(self.dx, self.de, self.dy, self.heads, name="attn", **kw)(
            x, e, y, node_mask
        )
        drop = nn.Dropout(self.dropout, deterministic=not train)
        out = []
        for name, h, new, d in (
            ("x", x, nx_, self.dx),
            ("e", e, ne, self.de),
            ("y", y, ny, self.dy),
        ):
            h = nn.LayerNorm(name=f"norm_{name}1", **kw)(h + drop(new))
            hidden = nn.relu(nn.Dense(self.ff_mult * d, name=f"ff_{name}1", **kw)(h))
            ff = nn.Dense(d, name=f"ff_{name}2", **kw)(drop(hidden))
            out.append(nn.LayerNorm(name=f"norm_{name}2", **kw)(h + drop(ff)))
        xm = node_mask[..., None].astype(x.dtype)
        em = edge_mask(node_mask)[..., None].astype(x.dtype)
        return out[0] * xm, out[1] * em, out[2]


__all__ = ["FiLM", "GraphTransformerLayer", "NodeEdgeBlock", "edge_mask", "masked_pool"]

"""RevCol as a DiT trunk: Cai et al. 2023, "Reversible Column Networks" (ICLR), Eq. (1)-(3), with
DiT's adaLN-Zero blocks (Peebles & Xie 2023) as the levels.

The trunk runs N columns over the patch embedding x_0 (B, T, width); column i has L levels and
level j is a group of `level_blocks` adaLN-Zero DiT blocks. The multi-level reversible
connection (Eq. (1)-(2)) of level j reads level j-1 of its own column and level j+1 of the
previous column and adds a scaled copy of the previous column's level j:

    x^i_j = F_j(x^i_{j-1} + x^{i-1}_{j+1}, c) + gamma_j * x^{i-1}_j          (x^i_0 = x_0)

and Eq. (3) recovers the previous column from the current one, top level first:

    x^{i-1}_j = (x^i_j - F_j(x^i_{j-1} + x^{i-1}_{j+1}, c)) / gamma_j

The paper's levels are the resolutions of a ConvNet and its fusion module down-samples the lower
input and up-samples the upper one before adding them; on a token sequence every level has the
same resolution, so the fusion is the plain sum (no resampling) and F_j is the level's DiT blocks
(each x + gated attention + gated MLP, zero-initialised gates, so a fresh level is its input).
The top level reads zeros as its missing upper input and column 0's previous column is zero
(`netlab.nn.revcol`). gamma_j is per channel, initialised to 0.5 and kept at |gamma| >= 1e-3 as
in the authors' code. The trunk's output is the last column's top level (the paper's
classification head reads it too).

The backward pass keeps only the last column and recomputes each earlier column from the next
(`revcol.revcol_scan`, a reverse scan: activation memory flat in the number of columns);
`reversible=False` runs the same columns through ordinary autodiff (`plain_columns_scan`), the
reference of tests/nn/test_dit_trunks.py and of bench/results/reversible_memory.md. As in
`netlab.nn.rev_dit`, the conditioning c rides with each level's parameters, broadcast over the
column axis, so the custom_vjp returns its gradient (summed over columns by ordinary backprop).
Dense MLPs, no dropout, computed in float32 by default (the reconstruction divides by gamma).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn import layers, revcol
from netlab.nn.blocks import AdaLNZeroBlock
from netlab.sharding import axes


class Level(nn.Module):
    """F_j: `blocks` adaLN-Zero DiT blocks on the fused input lower + upper."""

    width: int
    num_heads: int
    mlp_hidden: int
    blocks: int = 1
    dtype: Any = jnp.float32
    mlp_norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, lower, upper, c):
        h = lower + upper
        mlp = functools.partial(layers.Mlp, self.mlp_hidden, self.dtype)
        for k in range(self.blocks):
            h = AdaLNZeroBlock(
                self.width, self.num_heads, mlp, self.dtype, self.mlp_norm_eps, name=f"block{k}"
            )(h, c)
        return h


def _pure(level):
    def fn(p, lower, upper):
        params, c = p
        return level.apply({"params": params}, lower, upper, c)

    return fn


_half = nn.initializers.constant(0.5)


class RevColDiTStack(nn.Module):
    """(B, T, width), c (B, width) -> (B, T, width): columns x levels x level_blocks blocks."""

    width: int
    num_heads: int
    columns: int
    levels: int
    mlp_hidden: int
    level_blocks: int = 1
    dtype: Any = jnp.float32
    mlp_norm_eps: float = 1e-6
    reversible: bool = True

    def _level(self):
        return Level(
            self.width,
            self.num_heads,
            self.mlp_hidden,
            self.level_blocks,
            self.dtype,
            self.mlp_norm_eps,
            parent=None,
        )

    def _stacked(self, h, c):
        """The columns' parameters {"f": (level params, c), "gamma"} stacked on a column axis."""
        level, params = self._level(), []
        for i in range(self.columns):
            column = []
            for j in range(self.levels):
                f = self.param(f"col{i}_level{j}", lambda k: level.init(k, h, h, c)["params"])
                g = self.param(f"col{i}_gamma{j}", _half, (self.width,), jnp.float32)
                g = jnp.where(g >= 0, 1.0, -1.0) * jnp.maximum(jnp.abs(g), 1e-3)
                column.append({"f": nn.unbox(f), "gamma": g.astype(self.dtype)})
            params.append(column)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
        cs = jnp.broadcast_to(c, (self.columns,) + c.shape)
        return [{"f": (p["f"], cs), "gamma": p["gamma"]} for p in stacked]

    @nn.compact
    def __call__(self, h, c, recover: bool = False):
        """The last column's top level; `recover=True`: every column's levels, the last one run
        forward and the earlier ones (down to column 0's zero input) recovered from it by
        Eq. (3), first column first (for the tests)."""
        stacked = self._stacked(h, c)
        fns = (_pure(self._level()),) * self.levels
        zeros = tuple(jnp.zeros_like(h) for _ in range(self.levels))
        if recover:
            cols = [revcol.plain_columns_scan(fns, stacked, h, zeros)]
            for i in reversed(range(self.columns)):
                p = jax.tree.map(lambda a, i=i: a[i], stacked)
                cols.append(revcol.column_inverse(fns, p, h, cols[-1]))
            return cols[::-1]
        run = revcol.revcol_scan if self.reversible else revcol.plain_columns_scan
        out = run(fns, stacked, h, zeros)
        return axes.constrain(out[-1], axes.BATCH, axes.LENGTH, axes.EMBED)


def stack(width, num_heads, columns, levels, level_blocks, mlp_ratio, dtype, eps, rev=True):
    """The factory DiT uses for `model.trunk = "revcol"`."""
    return functools.partial(
        RevColDiTStack,
        width,
        num_heads,
        columns,
        levels,
        int(width * mlp_ratio),
        level_blocks,
        dtype,
        eps,
        rev,
    )

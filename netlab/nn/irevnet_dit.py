"""i-RevNet as a DiT trunk: Jacobsen, Smeulders & Oyallon 2018, "i-RevNet: Deep Invertible
Networks" (ICLR), Sec. 3 / Fig. 1, with residual functions made of DiT's adaLN-Zero branches
(Peebles & Xie 2023).

The patch embedding h (B, T, width) is split along the channels into (x~_0, x_0) and block j+1 is
the i-RevNet coupling with the explicit inverse

    x~_{j+1} = x_j,   x_{j+1} = x~_j + F_{j+1}(x_j)    <=>    x_j = x~_{j+1},
                                                              x~_j = x_{j+1} - F_{j+1}(x~_{j+1})

the trunk returning (x_J, x~_J) concatenated, width again. F_{j+1} is the residual function of a
DiT block of half the width, F(x) = a(x) + m(x + a(x)) with a = gate1 * Attn(modulate(LN(x))) and
m = gate2 * MLP(modulate(LN(.))) (the block computes x + F(x)), the shift/scale/gate regressed
from the conditioning c by zero-initialised layers, so a fresh trunk is the identity.

The paper's operator S (and S~ before the split) is an invertible down-sampling that stacks each
2 x 2 spatial block into channels; a token sequence has no spatial grid to down-sample and the
DiT's head needs the tokens back at the embedding width, so here S and S~ are the identity: the
trunk is the plain coupling stack on channel halves, a bijection of (B, T, width) (the injective
variant's zero channels would only widen every F). The image i-RevNet, with S, is
`netlab.nn.irevnet` (the digits classifier's `model.trunk=irevnet`).

The blocks share one structure and run as a `lax.scan`; `irevnet_scan` is its `jax.custom_vjp`
whose backward is a reverse scan recomputing each block's input from its output with the
inverse above (activation memory flat in depth, as in RevNet, Gomez et al. 2017, which i-RevNet's
coupling is: two i-RevNet blocks are one RevNet coupling). `reversible=False` runs the same blocks
through ordinary autodiff, the reference of tests/nn/test_dit_trunks.py and of
bench/results/reversible_memory.md. The conditioning rides with each block's parameters (as in
`netlab.nn.rev_dit`).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn.rev_dit import AdaLNBranch, pure_apply
from netlab.sharding import axes


def plain_scan(f, stacked, xt, x):
    """The couplings with ordinary autodiff, `stacked` = F's parameters on a leading axis."""

    def body(carry, p):
        xt, x = carry
        return (x, xt + f(p, x)), None

    return jax.lax.scan(body, (xt, x), stacked)[0]


def inverse_scan(f, stacked, xt, x):
    """(x~_0, x_0) from (x~_J, x_J), block by block in reverse (the explicit inverse)."""

    def body(carry, p):
        xt, x = carry
        return (x - f(p, xt), xt), None

    return jax.lax.scan(body, (xt, x), stacked, reverse=True)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def irevnet_scan(f, stacked, xt, x):
    """`plain_scan` whose gradient recomputes every block's input from its output."""
    return plain_scan(f, stacked, xt, x)


def _fwd(f, stacked, xt, x):
    out = plain_scan(f, stacked, xt, x)
    return out, (stacked, out)


def _bwd(f, res, d_out):
    stacked, (xt, x) = res

    def body(carry, p):
        xt, x, dxt, dx = carry  # x~_{j+1} = x_j, x_{j+1} = x~_j + F(x_j)
        fx, vjp = jax.vjp(f, p, xt)
        dp, d_in = vjp(dx)
        return (x - fx, xt, dx, dxt + d_in), dp

    (_, _, dxt, dx), grads = jax.lax.scan(body, (xt, x, *d_out), stacked, reverse=True)
    return grads, dxt, dx


irevnet_scan.defvjp(_fwd, _bwd)


class Residual(nn.Module):
    """A DiT block's residual function F(x) = a(x) + m(x + a(x)) on (B, T, width)."""

    width: int
    num_heads: int
    mlp_hidden: int
    dtype: Any = jnp.float32
    mlp_norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, x, c):
        a = AdaLNBranch(self.width, self.num_heads, 0, self.dtype, name="attn")(x, c)
        m = AdaLNBranch(
            self.width, self.num_heads, self.mlp_hidden, self.dtype, self.mlp_norm_eps, name="mlp"
        )(x + a, c)
        return a + m


class IRevNetDiTStack(nn.Module):
    """(B, T, width), c (B, width) -> (B, T, width): `depth` couplings of width / 2."""

    width: int
    num_heads: int
    depth: int
    mlp_hidden: int
    dtype: Any = jnp.float32
    mlp_norm_eps: float = 1e-6
    reversible: bool = True

    @nn.compact
    def __call__(self, h, c, inverse: bool = False):
        """The trunk's output; `inverse=True`: h is an output and the input is returned."""
        half = self.width // 2
        f = Residual(
            half, self.num_heads, self.mlp_hidden, self.dtype, self.mlp_norm_eps, parent=None
        )
        xt, x = jnp.split(h, 2, axis=-1)
        params = [
            nn.unbox(self.param(f"F{i}", lambda k: f.init(k, x, c)["params"]))
            for i in range(self.depth)
        ]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
        stacked = (stacked, jnp.broadcast_to(c, (self.depth,) + c.shape))
        if inverse:
            x, xt = jnp.split(h, 2, axis=-1)
            return jnp.concatenate(inverse_scan(pure_apply(f), stacked, xt, x), axis=-1)
        run = irevnet_scan if self.reversible else plain_scan
        xt, x = run(pure_apply(f), stacked, xt, x)
        out = jnp.concatenate([x, xt], axis=-1)
        return axes.constrain(out, axes.BATCH, axes.LENGTH, axes.EMBED)


def stack(width, num_heads, depth, mlp_ratio, dtype, mlp_norm_eps, reversible_backward=True):
    """The factory DiT uses for `model.trunk = "irevnet"` (blocks of width / 2)."""
    return functools.partial(
        IRevNetDiTStack,
        width,
        num_heads,
        depth,
        int(width // 2 * mlp_ratio),
        dtype,
        mlp_norm_eps,
        reversible_backward,
    )

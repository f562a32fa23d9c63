"""Reversible residual stacks: Gomez et al. 2017, "The Reversible Residual Network:
Backpropagation Without Storing Activations" (NeurIPS), eqs. (3)-(4) and Algorithm 1.

The input is split into halves (x1, x2) and each block is an additive coupling

    y1 = x1 + F(x2),        y2 = x2 + G(y1)                                  (forward)

whose inverse needs no inversion of F or G:

    x2 = y2 - G(y1),        x1 = y1 - F(x2)                                  (inverse)

`reversible_sequence` runs a list of such blocks under a `jax.custom_vjp` that saves only the
stack's outputs: the backward pass walks the blocks in reverse, recomputes each block's inputs
from its outputs by the inverse and back-propagates through that one block (Algorithm 1), so the
activation memory of the gradient does not grow with depth (the price is one extra forward of F
and G).
The gradients equal ordinary backpropagation up to the float error of the reconstruction.

- `reversible_sequence(fns, params, x1, x2)`: the functional core; `fns` is a tuple of (F, G) pure
  functions `(params, h) -> h`, `params` the matching tuple of (F params, G params).
- `plain_sequence`: the same composition with ordinary autodiff (the reference in the tests).
- `reversible_scan(fg, stacked, x1, x2)` / `plain_scan`: the same for `depth` blocks of one
  structure (F and G shared, parameters stacked on a leading axis) as a `lax.scan`, whose
  backward is a reverse scan. An unrolled backward leaves the buffer schedule to XLA, which on
  XLA:CPU keeps a few MiB per conv block alive (bench/results/reversible_memory.md); a loop
  reuses one block's buffers, so the temporaries are the same for every depth.
- `RevNet`: a Flax module over a list of (F, G) module factories, with `inverse`.
- `ReversibleMlp`: a Transformer MLP made of `depth` couplings of half-width MLPs, registered as
  `model.mlp = "revnet"`, so any DiT/ViT block can use a reversible feed-forward stack.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn import layers
from netlab.nn.registries import MLPS


def coupling(f, g, pf, pg, x1, x2):
    """The forward coupling."""
    y1 = x1 + f(pf, x2)
    return y1, x2 + g(pg, y1)


def coupling_inverse(f, g, pf, pg, y1, y2):
    """The inverse coupling."""
    x2 = y2 - g(pg, y1)
    return y1 - f(pf, x2), x2


def plain_sequence(fns, params, x1, x2):
    """The blocks composed with ordinary autodiff (stores every block's activations)."""
    for (f, g), (pf, pg) in zip(fns, params):
        x1, x2 = coupling(f, g, pf, pg, x1, x2)
    return x1, x2


def inverse_sequence(fns, params, y1, y2):
    """The stack's inputs from its outputs, block by block in reverse."""
    for (f, g), (pf, pg) in reversed(list(zip(fns, params))):
        y1, y2 = coupling_inverse(f, g, pf, pg, y1, y2)
    return y1, y2


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def reversible_sequence(fns, params, x1, x2):
    """`plain_sequence` whose gradient recomputes activations from outputs (Algorithm 1)."""
    return plain_sequence(fns, params, x1, x2)


def _fwd(fns, params, x1, x2):
    y = plain_sequence(fns, params, x1, x2)
    return y, (params, y)  # only the outputs are kept, not the activations


def _bwd(fns, res, dy):
    params, (y1, y2) = res
    dy1, dy2 = dy
    grads = []
    for (f, g), (pf, pg) in reversed(list(zip(fns, params))):
        gy, g_vjp = jax.vjp(g, pg, y1)
        x2 = y2 - gy
        fx, f_vjp = jax.vjp(f, pf, x2)
        x1 = y1 - fx
        dpg, dz1 = g_vjp(dy2)
        dz1 = dy1 + dz1  # dL/dy1 through y1 itself and through G(y1)
        dpf, dx2 = f_vjp(dz1)
        grads.append((dpf, dpg))
        y1, y2, dy1, dy2 = x1, x2, dz1, dy2 + dx2
    return tuple(reversed(grads)), dy1, dy2


reversible_sequence.defvjp(_fwd, _bwd)


def plain_scan(fg, stacked, x1, x2):
    """`plain_sequence` of identical blocks as a scan over stacked (F params, G params)."""
    f, g = fg

    def body(carry, p):
        return coupling(f, g, p[0], p[1], *carry), None

    return jax.lax.scan(body, (x1, x2), stacked)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def reversible_scan(fg, stacked, x1, x2):
    """`plain_scan` whose gradient is a reverse scan that recomputes each block's inputs."""
    return plain_scan(fg, stacked, x1, x2)


def _scan_fwd(fg, stacked, x1, x2):
    y = plain_scan(fg, stacked, x1, x2)
    return y, (stacked, y)


def _scan_bwd(fg, res, dy):
    f, g = fg
    stacked, (y1, y2) = res

    def body(carry, p):
        y1, y2, dy1, dy2 = carry
        gy, g_vjp = jax.vjp(g, p[1], y1)
        x2 = y2 - gy
        fx, f_vjp = jax.vjp(f, p[0], x2)
        dpg, dz1 = g_vjp(dy2)
        dz1 = dy1 + dz1
        dpf, dx2 = f_vjp(dz1)
        return (y1 - fx, x2, dz1, dy2 + dx2), (dpf, dpg)

    (_, _, dx1, dx2), grads = jax.lax.scan(body, (y1, y2, *dy), stacked, reverse=True)
    return grads, dx1, dx2


reversible_scan.defvjp(_scan_fwd, _scan_bwd)


def _pure(module):
    return lambda p, h: module.apply({"params": p}, h)


class RevNet(nn.Module):
    """A stack of additive couplings on x (..., 2c) split along the last axis.

    blocks: (F, G) pairs of module factories (e.g. `functools.partial(Mlp, 16)`); each module maps
    (..., c) -> (..., c). reversible=False uses ordinary backpropagation (for comparisons).
    scan=True runs the blocks as a `lax.scan` (`reversible_scan`): every block must be built by
    the first block's factories (their parameters are stacked on the fly)."""

    blocks: Sequence[tuple[Callable[..., nn.Module], Callable[..., nn.Module]]]
    reversible: bool = True
    scan: bool = False

    def _fns(self):
        return tuple((_pure(f(parent=None)), _pure(g(parent=None))) for f, g in self.blocks)

    @nn.compact
    def __call__(self, x):
        x1, x2 = jnp.split(x, 2, axis=-1)
        params = []
        for i, (f, g) in enumerate(self.blocks):
            pf = self.param(f"F{i}", lambda k, m=f(parent=None): m.init(k, x2)["params"])
            pg = self.param(f"G{i}", lambda k, m=g(parent=None): m.init(k, x1)["params"])
            params.append((nn.unbox(pf), nn.unbox(pg)))
        if self.scan:
            if any(b != self.blocks[0] for b in self.blocks):
                raise ValueError("RevNet(scan=True) needs every block built by the same factories")
            stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
            run = reversible_scan if self.reversible else plain_scan
            return jnp.concatenate(run(self._fns()[0], stacked, x1, x2), axis=-1)
        run = reversible_sequence if self.reversible else plain_sequence
        return jnp.concatenate(run(self._fns(), tuple(params), x1, x2), axis=-1)

    def inverse(self, y):
        """The input x from the output y = self(x), without storing anything."""
        params = tuple(
            (
                nn.unbox(self.get_variable("params", f"F{i}")),
                nn.unbox(self.get_variable("params", f"G{i}")),
            )
            for i in range(len(self.blocks))
        )
        y1, y2 = jnp.split(y, 2, axis=-1)
        return jnp.concatenate(inverse_sequence(self._fns(), params, y1, y2), axis=-1)


@MLPS.register("revnet")
class ReversibleMlp(nn.Module):
    """(..., embed) -> (..., embed): `depth` RevNet couplings whose F and G are MLPs on half the
    width (hidden = `hidden`, default 2 x embed), trained with the memory-saving backward."""

    depth: int = 2
    hidden: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = self.hidden or 2 * x.shape[-1]
        mlp = functools.partial(layers.Mlp, hidden=hidden, dtype=self.dtype)
        return RevNet(tuple((mlp, mlp) for _ in range(self.depth)), name="revnet")(x)

"""Modern Hopfield layers: Ramsauer et al. 2021, "Hopfield Networks is All You Need" (ICLR).

The continuous modern Hopfield network stores patterns X = (x_1 .. x_N) and updates a state
(query) pattern xi by eq. (3):

    xi_new = X softmax(beta X^T xi)

which retrieves a well-separated pattern in one step (Sec. 2) and is, with beta = 1/sqrt(d_k)
and learned maps of state and stored patterns, the attention of a Transformer (Sec. 3):

    Z = softmax(beta R W_Q W_K^T Y^T) Y W_K W_V

Here patterns are rows (the Transformer layout), so eq. (3) reads softmax(beta xi X^T) X.

- `hopfield_update`: eq. (3), no parameters; `retrieve` iterates it.
- `Hopfield`: state patterns R retrieve from stored patterns Y (both inputs), per head,
  with `update_steps` iterations of eq. (3) in the associative (key) space before the value map.
  As in the paper the values are Y W_K W_V (they share W_K with the keys); an output projection maps
  the heads back to the model width, as the authors' `hflayers` package does.
- `HopfieldLayer`: the stored patterns are learned weights (Sec. 3, "HopfieldLayer"): a learned
  key-value memory with a softmax over `num_patterns` slots. It maps (..., embed) -> (..., embed)
  with `__call__(x, train)`, so it is registered as a Transformer MLP (`model.mlp = "hopfield"`).
- `HopfieldPooling`: the state (query) patterns are learned (`num_queries` of them) and the input
  set is the stored patterns, so the output is invariant to the order of the input set (Sec. 3,
  "HopfieldPooling"; used for multiple-instance learning in the paper).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn.registries import MLPS
from netlab.sharding import axes

_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0)


def hopfield_update(xi, stored, beta):
    """Eq. (3) with patterns as rows: softmax(beta xi X^T) X; xi (..., n, d), stored (..., m, d)."""
    logits = beta * jnp.einsum("...nd,...md->...nm", xi, stored)
    return jnp.einsum("...nm,...md->...nd", jax.nn.softmax(logits, axis=-1), stored)


def retrieve(xi, stored, beta, steps: int = 1):
    """`steps` iterations of eq. (3) (one suffices for well-separated patterns)."""
    for _ in range(steps):
        xi = hopfield_update(xi, stored, beta)
    return xi


def _proj(module, name, d_in, heads, head_dim, dtype):
    w = module.param(
        name,
        axes.param(
            nn.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2)
            ),
            axes.EMBED,
            axes.HEADS,
            axes.KV,
        ),
        (d_in, heads, head_dim),
        jnp.float32,
    )
    return w.astype(dtype)


class Hopfield(nn.Module):
    """The Hopfield layer (Sec. 3): state (batch, n, d_r) retrieves from stored (batch, m, d_y),
    giving (batch, n, out)."""

    num_heads: int = 1
    head_dim: int | None = None  # None: out_features // num_heads
    out_features: int | None = None  # None: the state's width
    beta: float | None = None  # None: 1/sqrt(head_dim), the Transformer's scale
    update_steps: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, state, stored):
        out = self.out_features or state.shape[-1]
        hd = self.head_dim or out // self.num_heads
        beta = self.beta if self.beta is not None else hd**-0.5
        h, dt = self.num_heads, self.dtype
        q = jnp.einsum(
            "bnd,dhk->bhnk", state.astype(dt), _proj(self, "w_q", state.shape[-1], h, hd, dt)
        )
        k = jnp.einsum(
            "bmd,dhk->bhmk", stored.astype(dt), _proj(self, "w_k", stored.shape[-1], h, hd, dt)
        )
        w_v = self.param("w_v", axes.param(_init, axes.KV, None), (hd, hd), jnp.float32).astype(dt)
        v = jnp.einsum("bhmk,kj->bhmj", k, w_v)  # Y W_K W_V
        q = retrieve(q, k, beta, self.update_steps - 1)  # extra steps of eq. (3) in key space
        logits = beta * jnp.einsum("bhnk,bhmk->bhnm", q, k).astype(jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1).astype(dt)  # float32 softmax under bfloat16
        z = jnp.einsum("bhnm,bhmj->bnhj", probs, v)
        w_o = self.param(
            "w_o",
            axes.param(
                nn.initializers.variance_scaling(
                    1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2
                ),
                axes.HEADS,
                axes.KV,
                axes.EMBED,
            ),
            (h, hd, out),
            jnp.float32,
        )
        return jnp.einsum("bnhj,hjd->bnd", z, w_o.astype(dt))


@MLPS.register("hopfield")
class HopfieldLayer(nn.Module):
    """Learned stored patterns (num_patterns, embed): (..., embed) -> (..., embed), a Transformer
    MLP replacement (a softmax key-value memory)."""

    num_patterns: int = 64
    num_heads: int = 1
    beta: float | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        d = x.shape[-1]
        lead = x.shape[:-1]
        stored = self.param(
            "stored_patterns",
            axes.param(nn.initializers.normal(1.0), None, axes.EMBED),
            (self.num_patterns, d),
            jnp.float32,
        )
        flat = x.reshape(-1, x.shape[-2], d) if x.ndim >= 3 else x.reshape(1, -1, d)
        memory = jnp.broadcast_to(stored.astype(self.dtype), (flat.shape[0], *stored.shape))
        z = Hopfield(self.num_heads, beta=self.beta, dtype=self.dtype, name="hopfield")(
            flat, memory
        )
        return z.reshape(*lead, d)


class HopfieldPooling(nn.Module):
    """Learned state patterns pool a set: (batch, m, d) -> (batch, num_queries, out)."""

    num_queries: int = 1
    num_heads: int = 1
    out_features: int | None = None
    beta: float | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        query = self.param(
            "state_patterns",
            axes.param(nn.initializers.normal(1.0), None, axes.EMBED),
            (self.num_queries, d),
            jnp.float32,
        )
        state = jnp.broadcast_to(query.astype(self.dtype), (x.shape[0], self.num_queries, d))
        return Hopfield(
            self.num_heads,
            out_features=self.out_features or d,
            beta=self.beta,
            dtype=self.dtype,
            name="hopfield",
        )(state, x)

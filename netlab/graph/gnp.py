"""GNP, generalised norm-based pooling: Ko, Kwon, Shin & Lee, "Learning to Pool in Graph Neural
Networks for Extrapolation" (arXiv, 2021).

For non-negative x_1..x_N (one channel of one set: a graph's nodes for readout, a node's incoming
messages for aggregation)

    GNP_{p,q}(X) = ( N^{-q} Σ_i x_i^p )^{1/p},

with learnable p and q. Special values: (p, q) = (1, 0) is sum pooling, (1, 1) mean pooling, p -> ∞
max pooling (GNP_{p,0} lies in [max, N^{1/p} max]), p -> -∞ min pooling. Signed inputs are split,
GNP(X) = GNP⁺(ReLU(X)) − GNP⁻(ReLU(−X)), with separate (p, q) for each part; sum and mean stay
exact for signed inputs, while the max limit is max(x⁺) − max(x⁻) (max pooling for non-negative
inputs, e.g. after a ReLU).

Computed in the stable form exp((logsumexp_i(p log x_i) − q log N) / p), per channel, with zero
entries contributing x^p = 0 (p > 0) exactly rather than through an ε; a set with no positive entry
pools to 0. N counts real items only (padding rows and padding edges are masked), so padding never
changes a real graph's pooled value. p and q are per channel; |p| is kept ≥ 1e-3.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS


def gnp_segment(x, segment_ids, num_segments: int, p, q, mask=None):
    """GNP⁺_{p,q} of the non-negative rows of x [M, F] grouped by ``segment_ids`` -> [S, F];
    ``p``, ``q`` broadcast against [F]; rows with ``mask`` False are not counted."""
    acc = G.accum_dtype(x.dtype)
    x = x.astype(acc)
    p = jnp.asarray(p, acc)
    p = jnp.where(jnp.abs(p) < 1e-3, jnp.where(p < 0, -1e-3, 1e-3), p)
    valid = x > 0
    if mask is not None:
        valid = valid & mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    t = jnp.where(valid, p * jnp.log(jnp.where(valid, x, 1.0)), -jnp.inf)
    m = jax.ops.segment_max(t, segment_ids, num_segments=num_segments)
    has = jnp.isfinite(m)
    m = jax.lax.stop_gradient(jnp.where(has, m, 0.0))
    ex = jnp.where(valid, jnp.exp(t - m[segment_ids]), 0.0)
    lse = jnp.log(jnp.where(has, jax.ops.segment_sum(ex, segment_ids, num_segments), 1.0)) + m
    rows = jnp.ones(x.shape[:1], acc) if mask is None else mask.astype(acc)
    count = jax.ops.segment_sum(rows, segment_ids, num_segments)
    log_n = jnp.log(jnp.maximum(count, 1.0))[:, None]
    return jnp.where(has, jnp.exp((lse - jnp.asarray(q, acc) * log_n) / p), 0.0)


def gnp_signed(x, segment_ids, num_segments: int, pq_pos, pq_neg, mask=None):
    """GNP⁺(ReLU(x)) − GNP⁻(ReLU(−x)) with (p, q) pairs ``pq_pos`` and ``pq_neg``."""
    pos = gnp_segment(nn.relu(x), segment_ids, num_segments, *pq_pos, mask=mask)
    neg = gnp_segment(nn.relu(-x), segment_ids, num_segments, *pq_neg, mask=mask)
    return (pos - neg).astype(x.dtype)


class GNP(nn.Module):
    """Learnable signed GNP with per-channel (p, q) for the positive and negative parts, initialised
    at ``p_init``, ``q_init`` (default (1, 0): sum pooling). ``over="nodes"`` pools real nodes per
    graph [N, F] -> [G, F] (readout); ``over="edges"`` pools real incoming messages [E, F] per
    receiver -> [N, F] (aggregation)."""

    p_init: float = 1.0
    q_init: float = 0.0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, over: str = "nodes"):
        f = x.shape[-1]
        const = nn.initializers.constant
        p_pos, q_pos, p_neg, q_neg = (
            self.param(f"{n}_{s}", const(v), (f,), self.param_dtype)
            for s in ("pos", "neg")
            for n, v in (("p", self.p_init), ("q", self.q_init))
        )
        if over == "nodes":
            seg, num, mask = graph.node_graph, graph.num_graphs, graph.node_mask
        else:
            seg, num, mask = graph.receivers, graph.num_nodes, graph.edge_mask
        return gnp_signed(x, seg, num, (p_pos, q_pos), (p_neg, q_neg), mask)


@LAYERS.register("gnp")
class GNPConv(nn.Module):
    """An MPNN layer with GNP aggregation: h_v' = W_1 h_v + W_2 GNP_{u -> v}(h_u) + b (GraphConv's
    form with the sum replaced by a learnable GNP initialised at the sum, as GNP replaces every
    aggregation in the paper)."""

    features: int
    p_init: float = 1.0
    q_init: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x):
        gnp = GNP(self.p_init, self.q_init, self.param_dtype, name="gnp")
        agg = gnp(graph, G.gather(graph, x), over="edges")
        root = L.dense(self.features, True, "lin_root", self.dtype, self.param_dtype)(x)
        return root + L.dense(self.features, False, "lin_rel", self.dtype, self.param_dtype)(agg)


__all__ = ["GNP", "GNPConv", "gnp_segment", "gnp_signed"]

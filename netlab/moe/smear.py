"""SMEAR: Soft Merging of Experts with Adaptive Routing (Muqeeth, Liu, Raffel 2023, §3, eq. 2-3).

Per example: r = mean over tokens of the (optionally normalised) input, p = softmax(W_r r + b_r),
merged parameters theta_bar = sum_n p_n theta_n, and one merged expert is applied to every token:
y = f(h; theta_bar). Fully differentiable (no discrete routing), one expert forward per example
plus an O(E |theta|) merge.

Two ways in: `SMEARMLP` (the paper's adapter experts, with biases), and `router="smear"` in an MoE
layer, which merges the layer's stacked experts {wi, wo[, wg]} instead of dispatching tokens (so it
needs no dispatch backend: use backend="dense"). The merge weights read every token of an example,
so SMEAR is not causal.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe import experts
from netlab.moe.registries import ROUTERS
from netlab.moe.routing import F32, Router, Routing, router_logits
from netlab.sharding import axes


def smear_merge(probs, stacked):
    """theta_bar_g = sum_n probs[g, n] theta_n for every leaf of `stacked` (leaves (E, ...)) ->
    leaves (G, ...)."""
    probs = probs.astype(F32)
    return jax.tree.map(lambda w: jnp.einsum("gn,n...->g...", probs, w.astype(F32)), stacked)


def smear_apply(probs, stacked, x, activation="gelu", dtype=jnp.float32):
    """Apply each example's merged expert: x (G, S, d), stacked {wi (E,d,f), wo (E,f,d)} with
    optional biases bi (E,f), bo (E,d) and gate wg (E,d,f)."""
    w = jax.tree.map(lambda a: a.astype(dtype), smear_merge(probs, stacked))
    x = x.astype(dtype)
    h = jnp.einsum("gsd,gdf->gsf", x, w["wi"]) + (w["bi"][:, None] if "bi" in w else 0)
    g = jnp.einsum("gsd,gdf->gsf", x, w["wg"]) if "wg" in w else None
    y = jnp.einsum("gsf,gfd->gsd", experts.activation(h, g, activation), w["wo"])
    return y + (w["bo"][:, None] if "bo" in w else 0)


def normalised_mean(x):
    """r = mean over tokens of the layer-normalised (no affine) input, float32: (G, S, d) ->
    (G, d)."""
    xf = x.astype(F32)
    xn = (xf - xf.mean(-1, keepdims=True)) * jax.lax.rsqrt(xf.var(-1, keepdims=True) + 1e-6)
    return xn.mean(1)


class SMEARMLP(nn.Module):
    num_experts: int
    hidden: int
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x, train: bool = False):
        g, s, d = x.shape
        e, f = self.num_experts, self.hidden
        init = nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
        )
        zeros = nn.initializers.zeros
        stacked = {
            "wi": self.param(
                "wi", axes.param(init, axes.EXPERT, axes.EXPERT_EMBED, axes.MLP), (e, d, f)
            ),
            "bi": self.param("bi", axes.param(zeros, axes.EXPERT, axes.MLP), (e, f)),
            "wo": self.param(
                "wo", axes.param(init, axes.EXPERT, axes.MLP, axes.EXPERT_EMBED), (e, f, d)
            ),
            "bo": self.param("bo", axes.param(zeros, axes.EXPERT, axes.EXPERT_EMBED), (e, d)),
        }
        logits = nn.Dense(e, name="router", kernel_init=nn.initializers.normal(0.02))(
            normalised_mean(x)
        )
        probs = jax.nn.softmax(logits, -1)
        self.sow("intermediates", "probs", probs)
        return smear_apply(probs, stacked, x.astype(F32), self.activation).astype(x.dtype)


@ROUTERS.register("smear")
class SMEAR(Router):
    """Per-example merge weights p = softmax(r W_r) over the layer's experts (`router` (d, E))."""

    token_choice = False
    causal = False
    backends = ("dense",)

    def route(self, layer, x, train):
        g, s, _ = x.shape
        logits = router_logits(layer, normalised_mean(x)[:, None])  # (G, 1, E)
        probs = jax.nn.softmax(logits, -1)
        e = layer.num_experts
        return Routing(
            dispatch=None,
            combine=None,
            probs=jnp.broadcast_to(probs, (g, s, e)),
            logits=jnp.broadcast_to(logits, (g, s, e)),
        )

    def apply_experts(self, layer, routing, x, w, run):
        return smear_apply(routing.probs[:, 0], w, x, layer.activation, layer.dtype)

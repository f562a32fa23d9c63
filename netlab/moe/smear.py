"""SMEAR: Soft Merging of Experts with Adaptive Routing (Muqeeth, Liu, Raffel 2023, §3, eq. 2-3).

Per example: r = mean over tokens of the (optionally normalised) input, p = softmax(W_r r + b_r),
merged parameters θ̄ = Σ_n p_n θ_n, and one merged expert is applied to every token:
y = f(h; θ̄). Fully differentiable (no discrete routing), one expert forward per example plus an
O(E·|θ|) merge.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.dispatch import _act
from netlab.sharding import axes


def smear_merge(probs, stacked):
    """θ̄_g = Σ_n probs[g, n] θ_n for every leaf of `stacked` (leaves (E, ...)) -> leaves (G, ...)."""
    probs = probs.astype(jnp.float32)
    return jax.tree.map(lambda w: jnp.einsum("gn,n...->g...", probs, w.astype(jnp.float32)), stacked)


def smear_apply(probs, stacked, x, activation="gelu"):
    """Apply each example's merged expert: x (G, S, d), stacked {wi (E,d,f), bi (E,f), wo (E,f,d), bo (E,d)}."""
    w = smear_merge(probs, stacked)
    h = jnp.einsum("gsd,gdf->gsf", x, w["wi"]) + w["bi"][:, None]
    return jnp.einsum("gsf,gfd->gsd", _act(h, None, activation), w["wo"]) + w["bo"][:, None]


class SMEARMLP(nn.Module):
    num_experts: int
    hidden: int
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x):
        g, s, d = x.shape
        e, f = self.num_experts, self.hidden
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1,
                                                batch_axis=(0,))
        stacked = {
            "wi": self.param("wi", axes.param(init, axes.EXPERT, axes.EXPERT_EMBED, axes.MLP), (e, d, f)),
            "bi": self.param("bi", axes.param(nn.initializers.zeros, axes.EXPERT, axes.MLP), (e, f)),
            "wo": self.param("wo", axes.param(init, axes.EXPERT, axes.MLP, axes.EXPERT_EMBED), (e, f, d)),
            "bo": self.param("bo", axes.param(nn.initializers.zeros, axes.EXPERT, axes.EXPERT_EMBED), (e, d)),
        }
        xf = x.astype(jnp.float32)
        xn = (xf - xf.mean(-1, keepdims=True)) * jax.lax.rsqrt(xf.var(-1, keepdims=True) + 1e-6)
        r = xn.mean(1)
        logits = nn.Dense(e, name="router", kernel_init=nn.initializers.normal(0.02))(r)
        probs = jax.nn.softmax(logits, -1)
        self.sow("intermediates", "probs", probs)
        return smear_apply(probs, stacked, xf, self.activation).astype(x.dtype)

"""HyperRouter (Do et al. 2023, "HyperRouter: Towards Efficient Training and Inference of Sparse
Mixture of Experts", §3, eq. 4-5): the router weights are produced by a FIXED random hypernetwork
from a small trainable embedding: [W_r | b_r] = reshape(H(e), (E, d+1)), H = Linear(h_e, h) ->
ReLU -> Linear(h, E·(d+1)); logits z = x·W_rᵀ + b_r.

The hypernetwork is not a parameter at all: its weights are drawn from a fixed seed at trace time
(constants), so no optimizer, weight decay or checkpoint ever touches it; only the embedding
`hyper_embed` trains. The experts are then picked as by top-k (`router="hyper"`, field `hyper_dim`
= h_e = h).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe.registries import ROUTERS
from netlab.moe.routing import F32, TopK, check_positive
from netlab.sharding import axes


def hypernetwork(embedding, d: int, num_experts: int, hidden: int, seed: int = 0):
    """H(e) -> (W_r (E, d), b_r (E,)) with fixed weights from `seed` (fan-in scaled normals)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    h_in = embedding.shape[-1]
    w1 = jax.random.normal(k1, (h_in, hidden), jnp.float32) / jnp.sqrt(h_in)
    w2 = jax.random.normal(k2, (hidden, num_experts * (d + 1)), jnp.float32) / jnp.sqrt(hidden)
    out = (jax.nn.relu(embedding.astype(jnp.float32) @ w1) @ w2).reshape(num_experts, d + 1)
    return out[:, :d] / jnp.sqrt(d), out[:, d]


def hyper_router_weights(module: nn.Module, d: int, num_experts: int, hidden: int, seed: int = 0):
    """Create the trainable embedding inside `module` and return (W_r (E, d), b_r (E,))."""
    emb = module.param("hyper_embed", axes.param(nn.initializers.normal(1.0), None), (hidden,))
    return hypernetwork(emb, d, num_experts, hidden, seed)


@ROUTERS.register("hyper", "hyper_router")
class HyperRouter(TopK):
    """Top-k token choice on logits from the fixed hypernetwork."""

    def check(self, layer, group_size=None):
        super().check(layer, group_size)
        check_positive(f"{layer.config_key}.hyper_dim", layer.hyper_dim, integer=True)

    def logits(self, layer, x):
        wr, br = hyper_router_weights(layer, x.shape[-1], layer.num_experts, layer.hyper_dim)
        return jnp.einsum("gsd,ed->gse", x.astype(F32), wr) + br

"""Auxiliary-loss-free load balancing (DeepSeek-V3, Liu et al. 2024, §2.1.2, eq. 16-17).

Top-k token choice picks experts by p + b, with the weights still p[index]; b (E,) lives in the
`router_bias` collection (not a parameter: no gradient, no optimizer state, saved with the model
state). When that collection is mutable and `train` is true the layer updates it from this
batch's global counts: b <- b + u * sign(mean_count - count_e), with u = `bias_update_rate`
(0.001 in the paper), so an overloaded expert becomes less likely to be picked.
"""

import jax.numpy as jnp

from netlab.moe import losses
from netlab.moe.registries import ROUTERS
from netlab.moe.routing import TopK, check_positive, top_k_select


def bias_update(bias, counts, rate: float):
    """b + u * sign(mean(counts) - counts) (eq. 17's update after each step)."""
    return bias + rate * jnp.sign(jnp.mean(counts) - counts)


@ROUTERS.register("loss_free", "aux_free")
class LossFreeBias(TopK):
    """Top-k with the balancing bias b in the `router_bias` collection."""

    def check(self, layer, group_size=None):
        super().check(layer, group_size)
        check_positive(f"{layer.config_key}.bias_update_rate", layer.bias_update_rate)

    def select(self, layer, logits, train):
        e = layer.num_experts
        var = layer.variable("router_bias", "bias", jnp.zeros, (e,), jnp.float32)
        bias = var.value
        probs, index, weight = top_k_select(
            logits, layer.k, renormalize=layer.renormalize, bias=bias
        )
        if train and layer.is_mutable_collection("router_bias"):
            var.value = bias_update(bias, losses.expert_counts(index, e), layer.bias_update_rate)
        return probs, index, weight

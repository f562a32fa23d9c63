"""The MoE MLP block: router + stacked experts + a dispatch backend (+ optional shared experts).

    y, aux = MoEMLP(num_experts=8, hidden=128, k=2, backend="capacity").apply(v, x, train)

x is (G, S, d): G groups (sequences / images) of S tokens. `aux` is a dict of float32 scalars over
the global batch: `load_balance` (1 = perfect), `z_loss`, `importance`, `dropped_fraction`,
`unrouted_fraction`, and the vector `expert_fraction` (E,) (share of assignments per expert).
The routing gates (G, S, E) are sown into the `intermediates` collection as `gates` for plots.

Auxiliary-loss-free balancing (DeepSeek-V3, Liu et al. 2024, §2.1.2): with `bias_update_rate > 0`
the top-k choice uses p + b, where b (E,) lives in the `router_bias` collection (not a parameter,
no gradient, no optimizer state). When that collection is mutable and `train` is true the layer
updates b ← b + u·sign(mean_count − count_e) from this batch's global counts.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.moe import dispatch as dispatch_lib
from netlab.moe import grouped
from netlab.moe import losses, routing as R
from netlab.sharding import axes

ROUTERS = ("topk", "expert_choice", "soft", "sparsemixer")
DROPLESS = ("dropless", "ep_ragged")      # backends that take the (index, weight) assignment, no slots


class MoEMLP(nn.Module):
    num_experts: int
    hidden: int
    k: int = 2
    router: str = "topk"                 # topk | expert_choice | soft | sparsemixer
    backend: str = "capacity"            # dense | capacity | dropless | ep | ep_ragged (accelerators)
    grouped_matmul: str = "auto"         # dropless: auto | ragged_dot | tiled (netlab.moe.grouped)
    capacity_factor: Optional[float] = 1.25        # None: never drop
    eval_capacity_factor: Optional[float] = 2.0
    capacity_multiple: int = 4
    expert_capacity: Optional[int] = None          # fixed slots per expert per group (overrides the factors)
    bpr: bool = False                    # Batch Priority Routing (top-k)
    renormalize: bool = False            # divide the k weights by their sum
    activation: str = "gelu"
    glu: bool = False                    # gated experts (SwiGLU with activation="silu")
    num_shared: int = 0                  # shared experts (always on), fused into one MLP
    shared_hidden: Optional[int] = None
    router_jitter: float = 0.0           # multiplicative input jitter U[1-eps, 1+eps] in training
    bias_update_rate: float = 0.0        # > 0: DeepSeek-V3 auxiliary-loss-free bias balancing
    hyper_router: bool = False           # router weights from a frozen hypernetwork (HyperRouter)
    hyper_dim: int = 16
    soft_slots: int = 1                  # Soft MoE slots per expert
    expert_axis: str = "expert"          # mesh axis for backend="ep"
    batch_axes: tuple = ("data", "fsdp", "expert")
    dtype: jnp.dtype = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    def setup_check(self, d):
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}; choose one of {', '.join(ROUTERS)}")
        if self.backend not in dispatch_lib.BACKENDS:
            raise ValueError(f"unknown MoE backend {self.backend!r}; choose one of {', '.join(dispatch_lib.BACKENDS)}")
        grouped.resolve(self.grouped_matmul)
        if self.router in ("topk", "sparsemixer"):
            R.check_top_k(self.k, self.num_experts)
        if self.router == "sparsemixer" and self.k not in (1, 2):
            raise ValueError(f"sparsemixer supports k=1 or k=2, got k={self.k}; use router='topk' for larger k")
        if self.router == "soft" and self.backend in ("dense", "dropless", "ep_ragged"):
            raise ValueError("Soft MoE mixes tokens into slots: use backend='capacity' or 'ep'")
        if self.router == "expert_choice" and self.backend in ("dropless", "ep_ragged"):
            raise ValueError("expert choice has no per-token assignment: use backend='capacity', 'ep' or 'dense'")

    def expert_weights(self, d):
        e, f = self.num_experts, self.hidden
        batched = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1,
                                                   batch_axis=(0,))
        w = {"wi": self.param("wi", axes.param(batched, axes.EXPERT, axes.EXPERT_EMBED, axes.MLP), (e, d, f)),
             "wo": self.param("wo", axes.param(batched, axes.EXPERT, axes.MLP, axes.EXPERT_EMBED), (e, f, d))}
        if self.glu:
            w["wg"] = self.param("wg", axes.param(batched, axes.EXPERT, axes.EXPERT_EMBED, axes.MLP), (e, d, f))
        return w

    def router_logits(self, x):
        d, e = x.shape[-1], self.num_experts
        xf = x.astype(jnp.float32)
        if self.hyper_router:
            from netlab.moe.hyper_router import hyper_router_weights
            wr, br = hyper_router_weights(self, d, e, self.hyper_dim)
            return jnp.einsum("gsd,ed->gse", xf, wr) + br
        wr = self.param("router", axes.param(nn.initializers.normal(0.02), axes.EMBED, None), (d, e))
        return jnp.einsum("gsd,de->gse", xf, wr.astype(jnp.float32))

    @nn.compact
    def __call__(self, x, train: bool = False):
        g, s, d = x.shape
        self.setup_check(d)
        e = self.num_experts
        cf = self.capacity_factor if train else self.eval_capacity_factor

        def slots(k):
            return int(self.expert_capacity) if self.expert_capacity else R.capacity(s, e, k, cf, self.capacity_multiple)
        w = self.expert_weights(d)
        aux = {}
        xr = x
        if train and self.router_jitter > 0:
            u = jax.random.uniform(self.make_rng("router"), x.shape, jnp.float32,
                                   1.0 - self.router_jitter, 1.0 + self.router_jitter)
            xr = x * u.astype(x.dtype)

        if self.router == "soft":
            phi = self.param("phi", axes.param(nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2)),
                                               axes.EMBED, None, None), (d, e, self.soft_slots))
            scale = self.param("scale", nn.initializers.ones, ())
            routing = R.soft_moe_routing(xr, phi, scale)
        else:
            logits = self.router_logits(xr)
            if self.router == "expert_choice":
                routing = R.expert_choice_routing(logits, slots(self.k))
            else:
                bias = None
                if self.bias_update_rate > 0:
                    bias_var = self.variable("router_bias", "bias", jnp.zeros, (e,), jnp.float32)
                    bias = bias_var.value
                if self.router == "sparsemixer":
                    from netlab.moe.sparsemixer import sparsemixer_v2_select
                    rng = self.make_rng("router") if train else None
                    probs, index, weight = sparsemixer_v2_select(logits, self.k, rng, train)
                else:
                    probs, index, weight = R.top_k_select(logits, self.k, renormalize=self.renormalize, bias=bias)
                if self.backend in DROPLESS:
                    routing = R.without_slots(probs, logits, index, weight)
                else:
                    routing = R.assign_slots(probs, logits, index, weight, slots(self.k), bpr=self.bpr)
                if self.bias_update_rate > 0 and train and self.is_mutable_collection("router_bias"):
                    counts = losses.expert_counts(index, e)
                    bias_var.value = bias + self.bias_update_rate * jnp.sign(jnp.mean(counts) - counts)

        # Metrics over the global batch (float32).
        if routing.index is not None:
            aux["load_balance"] = losses.switch_load_balance(routing.probs, routing.index)
            aux["dropped_fraction"] = (jnp.zeros((), jnp.float32) if routing.dispatch is None else
                                       losses.dropped_fraction(routing.dispatch, routing.index.shape[-1]))
            counts = losses.expert_counts(routing.index, e)
        else:
            counts = jnp.sum(routing.dispatch, axis=(0, 1, 3))
            top1 = jnp.argmax(routing.probs, -1)[..., None]
            aux["load_balance"] = losses.switch_load_balance(routing.probs, top1)
            aux["dropped_fraction"] = jnp.zeros((), jnp.float32)
        aux["unrouted_fraction"] = (jnp.zeros((), jnp.float32) if routing.dispatch is None
                                    else losses.unrouted_fraction(routing.dispatch))
        aux["z_loss"] = losses.router_z_loss(routing.logits)
        aux["importance"] = losses.importance_loss(routing.probs)
        aux["expert_fraction"] = counts / jnp.maximum(jnp.sum(counts), 1.0)
        self.sow("intermediates", "gates", routing.dispatch.sum(-1) if routing.index is None else routing.gates())

        backend = self.backend
        y = dispatch_lib.run(backend, routing, x, w, self.activation, self.dtype, self.grouped_matmul,
                             **({"expert_axis": self.expert_axis, "batch_axes": self.batch_axes}
                                if backend in ("ep", "ep_ragged") else {}))
        if self.num_shared:
            hs = (self.shared_hidden or self.hidden) * self.num_shared
            wi = self.param("shared_wi", axes.param(self.kernel_init, axes.EMBED, axes.MLP), (d, hs))
            wo = self.param("shared_wo", axes.param(self.kernel_init, axes.MLP, axes.EMBED), (hs, d))
            h = x.astype(self.dtype) @ wi.astype(self.dtype)
            if self.glu:
                wg = self.param("shared_wg", axes.param(self.kernel_init, axes.EMBED, axes.MLP), (d, hs))
                h = dispatch_lib._act(h, x.astype(self.dtype) @ wg.astype(self.dtype), self.activation)
            else:
                h = dispatch_lib._act(h, None, self.activation)
            y = y + h @ wo.astype(self.dtype)
        return y.astype(x.dtype), aux

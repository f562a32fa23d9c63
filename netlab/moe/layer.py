"""The MoE MLP block: a router, stacked experts and a dispatch backend.

    y = MoEMLP(num_experts=8, hidden=128, k=2, router="topk", backend="capacity").apply(
        variables, x, train, mutable=aux.COLLECTIONS)

x is (G, S, d): G groups (sequences / images) of S tokens; y has x's shape and dtype. The router
(`netlab.moe.registries.ROUTERS`, `router=`) decides where each token goes, the backend
(`BACKENDS`, `backend=`; `dispatch.choose` picks its fallback where it cannot run) moves the tokens
to the experts (`netlab.moe.experts`) and back.

What the layer leaves in the `netlab.nn.aux` collections (float32 scalars over the global batch):
- losses, already weighted: `load_balance` = load_balance_weight * Switch load-balancing loss
  (Fedus et al. 2021, eq. 4; 1 at perfect balance) and `z_loss` = z_loss_weight * router z-loss
  (Zoph et al. 2022, eq. 5). A model sums them over its layers; the MoE tasks (LM, ViT, pMoE) set
  each layer's weight to the config coefficient divided by the number of MoE layers, so the total
  is the coefficient times the mean over layers; DiT-MoE (diffusion task) gives each layer its
  `load_balance_weight` directly, alpha on the sum over layers as in its reference code.
- metrics: the unweighted `load_balance`, `z_loss`, V-MoE `importance`, `dropped_fraction`
  (assignments that found no slot) and `unrouted_fraction` (tokens that reached no expert).
- `intermediates`: `gates` (G, S, E) and `expert_fraction` (E,) (share of assignments), for plots.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.moe import dispatch, experts, grouped, losses
from netlab.moe import routing as R
from netlab.moe.registries import BACKENDS, ROUTERS
from netlab.nn import aux
from netlab.registry import check_choice, check_range

F32 = jnp.float32


class MoEMLP(nn.Module):
    num_experts: int
    hidden: int
    k: int = 2
    router: str = "topk"  # a ROUTERS name: topk | expert_choice | soft | ...
    backend: str = "capacity"  # a BACKENDS name: dense | capacity | dropless | ep | ...
    grouped_matmul: str = "auto"  # dropless: auto | ragged_dot | tiled (netlab.moe.grouped)
    capacity_factor: Optional[float] = 1.25  # None or <= 0: never drop
    eval_capacity_factor: Optional[float] = 2.0
    capacity_multiple: int = 4
    expert_capacity: Optional[int] = None  # fixed slots per expert per group (overrides)
    bpr: bool = False  # Batch Priority Routing (token choice, slotted backends; not causal)
    causal: bool = False  # in a causal decoder: slots in token order, causal routers, no BPR
    renormalize: bool = False  # divide the k weights by their sum
    activation: str = "gelu"  # gelu | relu | silu
    glu: bool = False  # gated experts (SwiGLU with activation="silu")
    router_jitter: float = 0.0  # multiplicative input jitter U[1-eps, 1+eps] in training
    bias_update_rate: float = 0.001  # router="loss_free": DeepSeek-V3 bias step u
    hyper_dim: int = 16  # router="hyper": HyperRouter embedding width
    soft_slots: int = 1  # router="soft": Soft MoE slots per expert
    load_balance_weight: float = 0.01  # this layer's weight on its balance loss (Switch alpha)
    z_loss_weight: float = 1e-3  # this layer's weight on its router z-loss (ST-MoE)
    expert_axis: str = "expert"  # mesh axis for the expert-parallel backends
    batch_axes: tuple = ("data", "fsdp", "expert")
    dtype: Any = jnp.float32
    config_key: str = "model.moe"  # where these fields live in a config, for error messages

    # ----------------------------------------------------------------------------------------------
    def check(
        self, group_size: Optional[int] = None, causal: bool = False, expert_devices: int = 1
    ):
        """One-line UserErrors for bad field values (naming `config_key`.<field> and the choices);
        called by the tasks when they are built and by the layer when it runs. -> the router.
        `causal` (or the `causal` field): the layer sits in a causal decoder."""
        key = self.config_key
        causal = causal or self.causal
        router = ROUTERS.get(self.router, key=f"{key}.router")()
        BACKENDS.get(self.backend, key=f"{key}.backend")
        check_range(f"{key}.num_experts", self.num_experts, 1, None, integer=True)
        check_range(f"{key}.hidden", self.hidden, 1, None, integer=True)
        if causal and not router.causal:
            ok = [n for n in ROUTERS.names() if ROUTERS.get(n).causal]
            raise UserError(
                f"{key}.router={self.router!r} mixes tokens across positions and leaks "
                f"future tokens in a causal LM; choose one of {', '.join(ok)}"
            )
        if causal and self.bpr:
            raise UserError(
                f"{key}.bpr=True sorts a sequence's tokens by router confidence, so later "
                f"tokens decide which earlier ones keep a slot in a causal LM; set {key}.bpr=False"
            )
        if router.backends is not None and self.backend not in router.backends:
            raise UserError(
                f"{key}.backend={self.backend!r}: router {self.router!r} works with "
                f"backend {', '.join(router.backends)}"
            )
        if not router.token_choice and not getattr(BACKENDS.get(self.backend), "slots", True):
            raise UserError(f"{key}.backend={self.backend!r} needs a token-choice router")
        check_choice(f"{key}.activation", self.activation, experts.ACTIVATIONS)
        grouped.resolve(self.grouped_matmul, f"{key}.grouped_matmul")
        for field in ("capacity_factor", "eval_capacity_factor"):
            value = getattr(self, field)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise UserError(
                    f"{key}.{field}={value!r}: use a number (<= 0 or None: never drop a token)"
                )
        check_range(f"{key}.capacity_multiple", self.capacity_multiple, 1, None, integer=True)
        if self.expert_capacity is not None:
            check_range(f"{key}.expert_capacity", self.expert_capacity, 1, None, integer=True)
        check_range(f"{key}.router_jitter", self.router_jitter, 0.0, 1.0)
        if getattr(BACKENDS.get(self.backend), "expert_parallel", False):
            experts.check_expert_axis(
                self.num_experts, expert_devices, self.expert_axis, f"{key}.num_experts"
            )
        router.check(self, group_size)
        return router

    def capacity(self, group_size: int, train: bool, no_drop: bool = False) -> int:
        """Slots per expert per group (V-MoE's C; `expert_capacity` fixes it; `no_drop`: C = S)."""
        if no_drop:
            return group_size
        if self.expert_capacity:
            return int(self.expert_capacity)
        cf = self.capacity_factor if train else self.eval_capacity_factor
        cf = None if cf is not None and cf <= 0 else cf
        return R.capacity(group_size, self.num_experts, self.k, cf, self.capacity_multiple)

    def spec(self) -> experts.ExpertSpec:
        return experts.ExpertSpec(
            self.activation,
            self.dtype,
            self.grouped_matmul,
            self.expert_axis,
            tuple(self.batch_axes),
        )

    # ----------------------------------------------------------------------------------------------
    @nn.compact
    def __call__(self, x, train: bool = False):
        g, s, d = x.shape
        router = self.check(group_size=s)
        spec = self.spec()
        backend, no_drop = dispatch.choose(self.backend, g, self.num_experts, spec, self.config_key)
        w = experts.stacked_weights(self, self.num_experts, d, self.hidden, self.glu)
        xr = x
        if train and self.router_jitter > 0:
            u = jax.random.uniform(
                self.make_rng("router"),
                x.shape,
                F32,
                1.0 - self.router_jitter,
                1.0 + self.router_jitter,
            )
            xr = x * u.astype(x.dtype)
        routing = router.route(self, xr, train)
        if routing.dispatch is None and routing.index is not None and backend.slots:
            routing = R.assign_slots(
                routing.probs,
                routing.logits,
                routing.index,
                routing.weight,
                self.capacity(s, train, no_drop),
                bpr=self.bpr,
                causal=self.causal,
            )
        self.record(routing)
        y = router.apply_experts(self, routing, x, w, lambda r, x, w: backend.run(r, x, w, spec))
        return y.astype(x.dtype)

    def record(self, routing: R.Routing):
        """Sow the weighted losses, the routing metrics and the plot intermediates."""
        e = self.num_experts
        zero = jnp.zeros((), F32)
        if routing.index is not None:
            index = routing.index
            dropped = (
                zero
                if routing.dispatch is None
                else losses.dropped_fraction(routing.dispatch, index.shape[-1])
            )
            counts = losses.expert_counts(index, e)
        else:
            index = jnp.argmax(routing.probs, -1)[..., None]  # balance on the top-1 choice
            dropped = zero
            counts = (
                losses.expert_counts(index, e)
                if routing.dispatch is None
                else jnp.sum(routing.dispatch, axis=(0, 1, 3))
            )
        lb = losses.switch_load_balance(routing.probs, index)
        z = losses.router_z_loss(routing.logits)
        if self.load_balance_weight:
            aux.sow_loss(self, "load_balance", self.load_balance_weight * lb)
        if self.z_loss_weight:
            aux.sow_loss(self, "z_loss", self.z_loss_weight * z)
        unrouted = zero if routing.dispatch is None else losses.unrouted_fraction(routing.dispatch)
        for name, value in (
            ("load_balance", lb),
            ("z_loss", z),
            ("importance", losses.importance_loss(routing.probs)),
            ("dropped_fraction", dropped),
            ("unrouted_fraction", unrouted),
        ):
            aux.sow_metric(self, name, value)
        hard = routing.index is None and routing.dispatch is not None
        self.sow("intermediates", "gates", routing.dispatch.sum(-1) if hard else routing.gates())
        self.sow("intermediates", "expert_fraction", counts / jnp.maximum(jnp.sum(counts), 1.0))


def routed_fields(module: MoEMLP) -> dict:
    """The MoEMLP fields of `module` (a MoEMLP or a subclass), to build a plain MoEMLP."""
    skip = ("parent", "name")
    return {
        f.name: getattr(module, f.name)
        for f in dataclasses.fields(MoEMLP)
        if f.init and f.name not in skip
    }


def is_moe_layer(i: int, every: int) -> bool:
    """Block i of a model with an MoE MLP every `every` blocks (the last of each run of `every`:
    V-MoE's "every other layer" for every=2, all blocks for every=1)."""
    return i % every == every - 1

"""The Trainer's islands mode: DiLoCo over the `island` mesh axis, one inner step per call.

Douillard et al. 2023, "DiLoCo" (arXiv 2311.08105), Alg. 1, with QSR's sync period (Gu et al.
2024, ICLR); the algorithm, its defaults and the QSR rule are in netlab/train/diloco.py, whose
`outer_optimizer`, `outer_step` and `qsr_periods` this module reuses. Switched on by
`config.islands.sync_every` H >= 1 together with `config.mesh.island` K > 1:

    islands.sync_every      H: inner steps between synchronisations (the QSR base period)
    islands.outer_lr        outer SGD learning rate (paper 0.7)
    islands.outer_momentum  outer momentum (paper 0.9; 0: plain SGD)
    islands.nesterov        Nesterov momentum (paper: yes)
    islands.qsr_alpha       QSR's alpha: H_t = max(H, floor((alpha / lr_t)^2)) (0: fixed H)

`TrainState.params` holds the outer parameters theta^(t) (what evaluation, EMA and
`checkpoint.init_from` see); `TrainState.opt_state` is an `IslandState`: every island's own
parameters and inner optimizer state (the config's optimizer) with a leading island dimension
sharded on the `island` axis, and the outer optimizer state. Each island trains on its own
contiguous slice of the global batch (batch rows are split over island x data x fsdp x expert).
The inner step is a `jax.shard_map` manual over the island axis only (each island's block is the
ordinary step, sharded by GSPMD over the other axes), so it has no collective across islands; on a
sync step (every H-th, and the last) the same program ends with the outer step: the island mean
of theta^(t-1) - theta_k (one all-reduce of |theta| over the island axis) and the outer
optimizer, and every island restarts from theta^(t). The inner state carries over, as in the
paper. Sync and inner steps are two programs, chosen on the host from the step number, so the
compiled HLO of each shows what it communicates (netlab/tools/hlo_comm.py).

The whole island state is in the TrainState, so Orbax checkpoints it and a resumed run equals one
that never stopped. Batch statistics (mutable model state) are not averaged across islands, so
models that have them are refused.

Limits (refused at build with one line): inside an island, `tensor` together with `data`, `fsdp`
or `expert` (XLA's SPMD partitioner aborts on the partial-manual program), and `expert` or `stage`
> 1 (the MoE and pipeline layers' own `shard_map`s do not nest in the island one yet). Any one of
data / fsdp / tensor inside an island works; `jax.vmap` over the island dimension instead of
`shard_map` compiles those layouts but gave wrong results with tensor-sharded convolutions and
moved conv activations across islands, so it is not used.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.errors import UserError
from netlab.train import diloco
from netlab.train import ema as emalib
from netlab.train.state import TrainState

ISLAND = "island"  # the mesh axis, and the logical name of the leading island dimension


@dataclasses.dataclass(frozen=True)
class IslandState:
    local: Any  # every island's parameters theta_k: leading island dimension
    inner: Any  # every island's inner optimizer state: leading island dimension
    outer: Any  # the outer optimizer state (momentum), shaped like the parameters


jax.tree_util.register_dataclass(
    IslandState, data_fields=["local", "inner", "outer"], meta_fields=[]
)

DEFAULTS = dict(sync_every=0, outer_lr=0.7, outer_momentum=0.9, nesterov=True, qsr_alpha=0.0)


def from_config(config, mesh, total_steps: int, lr_schedule, warmup_steps: int = 0):
    """`Islands` when `config.islands.sync_every` >= 1, else None; one-line UserErrors for an
    islands block without an island axis, or an island axis without an islands block."""
    cfg = dict(DEFAULTS, **dict(config.get("islands", None) or {}))
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise UserError(
            f"config.islands: unknown key(s) {sorted(unknown)}; allowed: {', '.join(DEFAULTS)}"
        )
    h, k = cfg["sync_every"], mesh.shape[ISLAND]
    if isinstance(h, bool) or not isinstance(h, int) or h < 0:
        raise UserError(f"islands.sync_every={h!r}: expected an integer >= 0 (0: no islands)")
    if h == 0:
        if k > 1:
            raise UserError(
                f"mesh.island={k} needs islands: set --config.islands.sync_every=H (H >= 1 inner "
                "steps between synchronisations), or mesh.island=1"
            )
        return None
    if k == 1:
        raise UserError(
            f"islands.sync_every={h} needs mesh.island > 1 (got 1): set --config.mesh.island=K "
            "(K islands, e.g. one per slice), or islands.sync_every=0"
        )
    _check_mesh(dict(mesh.shape))
    alpha = cfg["qsr_alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise UserError(f"islands.qsr_alpha={alpha!r}: expected a number >= 0 (0: fixed H)")
    outer = diloco.outer_optimizer(
        float(cfg["outer_lr"]), float(cfg["outer_momentum"]), bool(cfg["nesterov"])
    )
    return Islands(k, h, outer, sync_points(total_steps, h, alpha, lr_schedule, warmup_steps))


def _check_mesh(shape: dict):
    """Mesh layouts inside an island that this mode cannot compile yet, refused in one line
    (otherwise XLA aborts the process or the model's own shard_map fails to lower)."""
    inner = shape["data"] * shape["fsdp"] * shape["expert"]
    if shape["tensor"] > 1 and inner > 1:
        raise UserError(
            f"islands with mesh.tensor={shape['tensor']} and data x fsdp x expert = {inner} > 1 "
            "inside each island: XLA's SPMD partitioner aborts on this layout (tensor with "
            "another axis under the island shard_map); use only one of them inside an island"
        )
    for axis in ("expert", "stage"):
        if shape[axis] > 1:
            raise UserError(
                f"islands with mesh.{axis}={shape[axis]}: the layer's own shard_map over "
                f"{axis!r} cannot nest in the island shard_map yet; set mesh.{axis}=1 (use "
                "data or fsdp inside each island)"
            )


def sync_points(total: int, h: int, alpha: float, lr_schedule=None, warmup_steps: int = 0):
    """The step counts (1-based: after that many inner steps) at which the islands synchronise:
    every H-th and the last (fixed H), or the ends of QSR's periods (alpha > 0)."""
    if alpha > 0:
        lrs = np.asarray(jax.vmap(lr_schedule)(jnp.arange(total)), np.float64)
        periods = diloco.qsr_periods(lambda t: lrs[t], alpha, h, total, warmup_steps)
        return frozenset(np.cumsum(periods).tolist())
    return frozenset(list(range(h, total + 1, h)) + [total])


def _stack(k):
    def one(x):
        if isinstance(x, nn.Partitioned):
            value = jnp.broadcast_to(x.value, (k, *jnp.shape(x.value)))
            return x.replace(value=value, names=(ISLAND, *x.names))
        return nn.Partitioned(
            jnp.broadcast_to(x, (k, *jnp.shape(x))), (ISLAND,) + (None,) * jnp.ndim(x)
        )

    return lambda tree: jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _batched(axes):
    return bool(axes) and axes[0] == "batch"


def _is_axes(x):
    return x is None or type(x) is tuple


class Islands:
    def __init__(self, k: int, h: int, outer, syncs: frozenset):
        self.k, self.h, self.outer, self.syncs = k, h, outer, syncs

    def syncs_after(self, step: int) -> bool:
        """Whether the step that starts at `step` updates applied ends with the outer step."""
        return step + 1 in self.syncs

    # ---------------------------------------------------------------------------------------------
    # What the Trainer asks at build time
    def rules(self, rules: tuple) -> tuple:
        """The config's rules plus the leading island dimension on the island axis."""
        return tuple(rules) + ((ISLAND, ISLAND),)

    def check(self, gbs: int, dp: int, accum: int, abstract_model_state):
        if not gbs:
            raise UserError(
                "islands.sync_every needs a mini-batch task (each island trains on its own slice "
                "of train.batch_size); this task trains full-batch"
            )
        if gbs % (self.k * dp * accum):
            raise UserError(
                f"train.batch_size={gbs} does not split over {self.k} islands x data-parallel "
                f"size {dp} x grad_accum {accum}; use a multiple of {self.k * dp * accum}"
            )
        if jax.tree.leaves(abstract_model_state):
            raise UserError(
                "islands.sync_every: this model keeps mutable state (batch statistics), which "
                "islands do not average; use islands.sync_every=0 or a model without it"
            )

    def batch_shardings(self, batch_axes, shardings):
        """Batch rows split over island x (the config's batch axes): island k gets a slice."""

        def one(axes, s):
            if not _batched(axes):
                return s
            first = s.spec[0] if len(s.spec) else None
            names = (first,) if isinstance(first, str) else tuple(first or ())
            return NamedSharding(s.mesh, P((ISLAND, *names), *s.spec[1:]))

        return jax.tree.map(one, batch_axes, shardings, is_leaf=_is_axes)

    def init_boxed(self, params, opt_state) -> IslandState:
        """The island state from boxed (logically named) parameters and inner optimizer state."""
        stack = _stack(self.k)
        return IslandState(stack(params), stack(opt_state), self.outer.init(params))

    def with_params(self, state: TrainState, params) -> TrainState:
        """`state` restarted from outer parameters `params` (checkpoint.init_from)."""
        local = jax.tree.map(lambda p: jnp.broadcast_to(p, (self.k, *p.shape)), params)
        return state.replace(
            params=params, opt_state=dataclasses.replace(state.opt_state, local=local)
        )

    # ---------------------------------------------------------------------------------------------
    def train_step(self, trainer, state: TrainState, batch, sync: bool):
        """One inner step on every island; with `sync`, then DiLoCo's outer step (Alg. 1 l. 8-9)."""
        k, isl = self.k, state.opt_state
        rng = jax.random.fold_in(jax.random.key(trainer.config.seed), state.step)

        def split(axes, x):  # island k's contiguous rows of the global batch
            if not _batched(axes):
                return x
            x = x.reshape((k, x.shape[0] // k) + x.shape[1:])
            return nn.with_logical_constraint(x, (ISLAND, *axes))

        batch = jax.tree.map(split, trainer.batch_axes, batch, is_leaf=_is_axes)
        batch_specs = jax.tree.map(
            lambda a: P(ISLAND) if _batched(a) else P(), trainer.batch_axes, is_leaf=_is_axes
        )

        def island(params, opt_state, batch):  # one island's block: leading dimension 1
            first = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
            params, opt_state = first(params), first(opt_state)
            batch = jax.tree.map(
                lambda a, x: x[0] if _batched(a) else x,
                trainer.batch_axes,
                batch,
                is_leaf=_is_axes,
            )
            key = jax.random.fold_in(rng, jax.lax.axis_index(ISLAND))
            loss, metrics, _, grads = trainer._grads(params, state.model_state, batch, key)
            updates, opt_state = trainer.tx.update(grads, opt_state, params)
            metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
            params = optax.apply_updates(params, updates)
            return jax.tree.map(lambda a: a[None], (params, opt_state, metrics))

        # Manual over the island axis only: inside, each island's program is the ordinary
        # (GSPMD-sharded over data/fsdp/tensor) step, with no collective across islands.
        local, inner, metrics = jax.shard_map(
            island,
            in_specs=(P(ISLAND), P(ISLAND), batch_specs),
            out_specs=P(ISLAND),
            axis_names={ISLAND},
        )(isl.local, isl.inner, batch)
        params, outer = state.params, isl.outer
        if sync:
            # Alg. 1 l. 8: the outer gradient, the island mean of theta^(t-1) - theta_k.
            delta = jax.tree.map(lambda p, q: jnp.mean(p[None] - q, axis=0), params, local)
            params, outer = diloco.outer_step(self.outer, params, outer, delta)
            local = jax.tree.map(lambda p: jnp.broadcast_to(p, (k, *p.shape)), params)
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            opt_state=IslandState(local, inner, outer),
            model_state=state.model_state,
            ema=emalib.update(state.ema, params, state.step, trainer.ema_slots),
        )
        metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
        return new_state, dict(metrics, lr=trainer.lr_schedule(state.step))

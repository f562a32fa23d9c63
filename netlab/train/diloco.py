"""DiLoCo: islands that train alone for H steps and synchronise once. Douillard et al. 2023,
"DiLoCo: Distributed Low-Communication Training of Language Models" (arXiv 2311.08105), Alg. 1.

One round, K islands (the devices of one mesh axis, `data` by default), all starting from the
outer parameters theta^(t-1):

    theta_k   = H inner optimizer steps (AdamW in the paper) on island k's own batches
    Delta     = (1/K) sum_k (theta^(t-1) - theta_k)          (the outer gradient, Alg. 1 l. 8)
    theta^(t) = OuterOpt(theta^(t-1), Delta)                 (SGD with Nesterov momentum, l. 9)

Every island's inner optimizer state (Adam moments) stays local and carries over to the next
round, as in the paper and OpenDiLoCo; the islands restart from theta^(t). The only collective
of a round is the mean of the deltas (one all-reduce of |theta|), so a round of H steps
communicates H times less than H data-parallel steps (`collective_bytes` counts it from the
jaxpr). With H = 1, inner SGD and outer SGD at lr 1 without momentum a round is one synchronous
data-parallel SGD step on the mean gradient; with outer lr 1 and no momentum it is FedAvg / local
SGD at any H.

The round runs under `jax.shard_map` over the island axis; the per-island state has a leading
island dimension sharded on that axis (as MaxText's DiLoCo does). The outer parameters enter
replicated and are cast to varying (`jax.lax.pcast`) before the inner steps: `jax.grad` of a
replicated input inside `shard_map` would otherwise be the psum over the islands of the local
gradients (silently synchronous training with a K-times learning rate).

Defaults differ by source: the paper and OpenDiLoCo use H = 500, outer lr 0.7, momentum 0.9,
Nesterov; MaxText uses a sync period of 36 and outer lr 0.3. Here they are arguments.

Also QSR (`qsr_period`, `qsr_periods`): Gu, Lyu, Arora, Zhang & Huang 2024, "Why (and when) does
local SGD generalize better than SGD?" (ICLR), the Quadratic Synchronization Rule: after each
synchronisation the next period is H = max(H_base, floor((alpha / lr_t)^2)) for the current
learning rate lr_t, so islands synchronise less often as the learning rate decays. As in the
authors' code, the period is capped by the remaining steps (H explodes as lr -> 0), is at least 1,
and equals H_base during warmup.

Standalone: `DiLoCo(loss_fn, inner, mesh, ...)` takes a loss function `loss_fn(params, batch)`, an
optax inner optimizer and a mesh; H is the length of the batches' second axis, so each distinct H
compiles once. The trainer's islands mode (netlab/train/islands.py, `config.islands`) shares
`outer_optimizer`, `outer_step` and `qsr_periods` but steps one inner step per call, so that
checkpoints, logging and evaluation keep their per-step cadence.
"""

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.errors import UserError


@dataclasses.dataclass(frozen=True)
class DiLoCoState:
    params: Any  # outer parameters theta^(t), replicated
    outer_state: Any  # outer optimizer state (Nesterov momentum), replicated
    inner_state: Any  # inner optimizer state of every island: leading island axis, sharded


jax.tree_util.register_dataclass(
    DiLoCoState, data_fields=["params", "outer_state", "inner_state"], meta_fields=[]
)


def outer_optimizer(lr: float = 0.7, momentum: float = 0.9, nesterov: bool = True):
    """SGD with (Nesterov) momentum on the outer gradient; momentum 0 is plain SGD."""
    if lr <= 0:
        raise UserError(f"diloco outer lr={lr!r}: use a positive learning rate (paper: 0.7)")
    if not 0 <= momentum < 1:
        raise UserError(f"diloco outer momentum={momentum!r}: use a value in [0, 1) (paper: 0.9)")
    return optax.sgd(lr, momentum=momentum or None, nesterov=bool(momentum) and nesterov)


def outer_step(outer: optax.GradientTransformation, params, outer_state, delta):
    """Alg. 1 l. 9: theta^(t) = OuterOpt(theta^(t-1), Delta) -> (params, outer_state); `delta`
    is the island mean of theta^(t-1) - theta_k (the outer gradient). Shared by `DiLoCo` and
    the trainer's islands mode (netlab/train/islands.py)."""
    updates, outer_state = outer.update(delta, outer_state, params)
    return optax.apply_updates(params, updates), outer_state


class DiLoCo:
    """DiLoCo rounds over the mesh axis `axis` (K = its size islands).

    `loss_fn(params, batch) -> scalar`, `inner` the inner optax optimizer (the paper: AdamW),
    `outer` the outer one (default `outer_optimizer()`: SGD lr 0.7, Nesterov momentum 0.9).
    `init(params)` -> `DiLoCoState`; `round(state, batches)` runs one round, where every leaf of
    `batches` is (K, H, ...): H inner batches for each island.
    """

    def __init__(
        self,
        loss_fn: Callable,
        inner: optax.GradientTransformation,
        mesh: jax.sharding.Mesh,
        outer: optax.GradientTransformation = None,
        axis: str = "data",
    ):
        if axis not in mesh.axis_names:
            raise UserError(
                f"diloco axis={axis!r} is not a mesh axis; choose one of {mesh.axis_names}"
            )
        self.loss_fn, self.inner, self.mesh, self.axis = loss_fn, inner, mesh, axis
        self.outer = outer_optimizer() if outer is None else outer
        self.islands = mesh.shape[axis]
        self._round = jax.jit(self._round_fn)

    def _sharding(self, spec):
        return NamedSharding(self.mesh, spec)

    def init(self, params) -> DiLoCoState:
        def init(params):  # every island starts from the same inner state
            inner = jax.tree.map(
                lambda a: jnp.broadcast_to(a, (self.islands, *jnp.shape(a))),
                self.inner.init(params),
            )
            return DiLoCoState(params, self.outer.init(params), inner)

        shardings = DiLoCoState(
            self._sharding(P()), self._sharding(P()), self._sharding(P(self.axis))
        )
        return jax.jit(init, out_shardings=shardings)(params)

    def _island(self, params, inner_state, batches):
        """One island's H inner steps (no collective): runs inside shard_map."""
        local = jax.lax.pcast(params, (self.axis,), to="varying")
        inner_state = jax.tree.map(lambda a: a[0], inner_state)
        batches = jax.tree.map(lambda a: a[0], batches)

        def step(carry, batch):
            p, s = carry
            grads = jax.grad(self.loss_fn)(p, batch)
            updates, s = self.inner.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (local, inner_state), _ = jax.lax.scan(step, (local, inner_state), batches)
        # Alg. 1 l. 8: the outer gradient is the island average of theta^(t-1) - theta_k.
        delta = jax.lax.pmean(jax.tree.map(jnp.subtract, params, local), self.axis)
        return delta, jax.tree.map(lambda a: a[None], inner_state)

    def _round_fn(self, state: DiLoCoState, batches):
        a = self.axis
        island = jax.shard_map(
            self._island,
            mesh=self.mesh,
            in_specs=(P(), P(a), P(a)),
            out_specs=(P(), P(a)),
        )
        delta, inner_state = island(state.params, state.inner_state, batches)
        params, outer_state = outer_step(self.outer, state.params, state.outer_state, delta)
        return DiLoCoState(params, outer_state, inner_state)

    def round(self, state: DiLoCoState, batches) -> DiLoCoState:
        lead = {tuple(np.shape(x)[:1]) for x in jax.tree.leaves(batches)}
        if lead != {(self.islands,)}:
            raise UserError(
                f"diloco batches: every leaf needs a leading island axis of size {self.islands} "
                f"(the size of mesh axis {self.axis!r}), got leading sizes {sorted(lead)}"
            )
        batches = jax.device_put(batches, self._sharding(P(self.axis)))
        return self._round(state, batches)

    def jaxpr(self, state: DiLoCoState, batches):
        """The closed jaxpr of one round, for counting its collectives."""
        return jax.make_jaxpr(self._round_fn)(state, batches)


# --------------------------------------------------------------------------------------------------
# Communication, counted from the program

COLLECTIVES = ("psum", "psum_invariant", "all_gather", "all_to_all", "reduce_scatter", "ppermute")


def collective_bytes(closed_jaxpr) -> dict:
    """{collective: bytes moved per call of the program}: every collective's operand bytes, times
    the trip count of each `scan` around it (a `while` of unknown length counts once). `psum` and
    `pmean` (primitives psum / psum_invariant) count as "all_reduce"."""
    out: dict = {}

    def walk(jaxpr, times):
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name in COLLECTIVES:
                size = sum(
                    math.prod(v.aval.shape) * np.dtype(v.aval.dtype).itemsize for v in eqn.invars
                )
                key = "all_reduce" if name.startswith("psum") else name
                out[key] = out.get(key, 0) + times * size
            inner = times * (eqn.params["length"] if name == "scan" else 1)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub, inner)

    walk(closed_jaxpr.jaxpr, 1)
    return out


# --------------------------------------------------------------------------------------------------
# QSR: the Quadratic Synchronization Rule


def qsr_period(lr: float, alpha: float, h_base: int, remaining: int = None) -> int:
    """H = max(H_base, floor((alpha / lr)^2)), capped by `remaining` steps, at least 1
    (Gu et al. 2024, Sec. 3; the cap and the floor of 1 as in the authors' code)."""
    h = max(int((alpha / lr) ** 2) if lr > 0 else h_base, h_base)
    if remaining is not None:
        h = min(h, remaining)
    return max(h, 1)


def qsr_periods(
    schedule: Callable, alpha: float, h_base: int, total_steps: int, warmup_steps: int = 0
) -> list:
    """The sync periods of a run of `total_steps` inner steps under the learning-rate schedule
    `schedule(step)`: each round's H is chosen at its first step; H_base during warmup."""
    if alpha <= 0 or h_base < 1:
        raise UserError(
            f"qsr alpha={alpha!r}, h_base={h_base!r}: use alpha > 0 and an integer h_base >= 1 "
            "(the paper: ViT-B, alpha 0.0175, H_base 4)"
        )
    periods, t = [], 0
    while t < total_steps:
        if t < warmup_steps:
            h = max(min(h_base, total_steps - t), 1)
        else:
            h = qsr_period(float(schedule(t)), alpha, h_base, total_steps - t)
        periods.append(h)
        t += h
    return periods

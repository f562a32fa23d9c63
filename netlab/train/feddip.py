"""FedDIP: federated learning with extreme dynamic pruning and incremental regularisation.
Long, Liu, Kong, Cheng & Lin 2023, "FedDIP: Federated Learning with Extreme Dynamic Pruning and
Incremental Regularization" (ICDM), Sec. IV; details as in the authors' code (EricLoong/feddip,
client.py).

One communication round t of T, every client starting from the global dense weights w:

- Mask: the global magnitude mask m_t keeps the largest |w| over all prunable leaves (the
  weight matrices; biases and other 1-D leaves stay dense, as the authors' `bias=False`) and
  prunes round(s_t N) of the N prunable weights, with the cubic schedule (Zhu & Gupta 2017)

      s_t = s_f + (s_0 - s_f) (1 - t / T)^3            (s_0 = 0.5 in the authors' runs)

  recomputed every `reconfig_interval` rounds (the authors: 5 or 20). Ties: the lower index is
  pruned first, so the realised sparsity is exactly round(s_t N) / N.
- Local steps with error feedback (dynamic pruning with feedback, Lin et al. 2020): the gradient
  is taken at the pruned point w * m for every coordinate and applied to the dense w,

      w <- w - lr * grad_v [ L(v) + lambda_t sum_l ||v_l||_2 ] at v = w * m,

  so a pruned weight keeps accumulating its updates and grows back into the mask once its
  magnitude is large enough.
- Incremental regularisation: lambda_t is the authors' step function over `segments` (20)
  equal pieces of the T rounds: 0 in the first, then lambda_init + (lambda_max - lambda_init)
  (i - 1) / (segments - 1) in piece i (the code's 5e-4 and `lambda_shrink` 1e-3; it never
  quite reaches lambda_max). The penalty is the l2 norm of each prunable leaf, not its square
  (the authors' `torch.norm(w, p=2)`).
- Aggregation: FedAvg, the data-size-weighted mean of the clients' dense weights. The deployed
  model is w * m (`sparse_params`).

We simulate the transport: every client's dense weights are averaged (the authors' code does the
same); the communication saving of sending only the unpruned weights is not modelled. The first
mask is the magnitude mask at s_0 rather than the authors' random ERK mask. The clients are a
leading axis of every leaf of the batches (vmap); put that axis on a mesh axis (`jax.device_put`
with `PartitionSpec(axis)`) and the mean becomes one all-reduce.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from netlab.errors import UserError


def sparsity_at(t: int, total: int, final: float, initial: float = 0.5) -> float:
    """s_t = s_f + (s_0 - s_f)(1 - t/T)^3, held at s_f after round T."""
    frac = 1.0 - min(max(t, 0), total) / total
    return final + (initial - final) * frac**3


def lambda_at(t: int, total: int, lam_max: float = 1e-3, lam_init: float = 5e-4, segments=20):
    """The authors' incremental step function: 0 in the first of `segments` equal pieces of the
    T rounds, then lam_init + (lam_max - lam_init)(i - 1)/(segments - 1) in piece i (the
    remainder rounds belong to the last piece)."""
    i = min(t // max(total // segments, 1), segments - 1)
    return 0.0 if i == 0 else lam_init + (lam_max - lam_init) * (i - 1) / (segments - 1)


def prunable(params):
    """Which leaves are pruned: the ones with at least two dimensions (weight matrices)."""
    return jax.tree.map(lambda a: jnp.ndim(a) >= 2, params)


def magnitude_mask(params, sparsity, which=None):
    """Global magnitude mask: 0 on the round(sparsity N) smallest |w| of the prunable leaves
    (N of them in all; ties prune the lower flat index first), 1 elsewhere. `sparsity` may be
    traced (one compile for every round)."""
    which = prunable(params) if which is None else which
    leaves, tree = jax.tree.flatten(params)
    flags = jax.tree.leaves(which)
    mags = jnp.concatenate([jnp.abs(a).ravel() for a, f in zip(leaves, flags) if f])
    k = jnp.round(sparsity * mags.size).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(mags, stable=True), stable=True)
    keep = (rank >= k).astype(leaves[0].dtype)
    out, at = [], 0
    for a, f in zip(leaves, flags):
        if f:
            out.append(keep[at : at + a.size].reshape(a.shape).astype(a.dtype))
            at += a.size
        else:
            out.append(jnp.ones_like(a))
    return jax.tree.unflatten(tree, out)


def realised_sparsity(mask, which=None) -> jax.Array:
    """The fraction of zeros among the prunable entries of a mask."""
    which = prunable(mask) if which is None else which
    pairs = zip(jax.tree.leaves(mask), jax.tree.leaves(which))
    parts = [(jnp.sum(m == 0), m.size) for m, f in pairs if f]
    return sum(p[0] for p in parts) / sum(p[1] for p in parts)


def client_update(loss_fn, local, params, mask, batches, lam, which=None):
    """A client's local steps with error feedback: `batches` leaves are (E, ...), one batch a
    step; the gradient at w * m (plus lam times the prunable leaves' l2 norms) is applied to the
    dense w through the optax optimizer `local` (fresh each round, as the authors)."""
    which = prunable(params) if which is None else which

    def objective(v, batch):
        pairs = zip(jax.tree.leaves(v), jax.tree.leaves(which))
        norms = [optax.safe_norm(a, 0.0) for a, f in pairs if f]
        return loss_fn(v, batch) + lam * sum(norms)

    def step(carry, batch):
        w, s = carry
        g = jax.grad(objective)(jax.tree.map(jnp.multiply, w, mask), batch)
        u, s = local.update(g, s, w)
        return (optax.apply_updates(w, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, local.init(params)), batches)
    return params


@dataclasses.dataclass(frozen=True)
class FedDIPState:
    params: Any  # global dense weights
    mask: Any  # the current global mask (1 keep, 0 pruned)
    round: int  # rounds done (host int: the schedules read it, the same on every host)


jax.tree_util.register_dataclass(FedDIPState, data_fields=["params", "mask"], meta_fields=["round"])


class FedDIP:
    """FedDIP over T = `rounds` rounds: `init(params)`, `round(state, batches, weights=None)`
    where every leaf of `batches` is (clients, E, ...) and `weights` (clients,) are the data
    sizes of FedAvg (default equal); `sparse_params(state)` is the deployed model w * m."""

    def __init__(
        self,
        loss_fn: Callable,
        local: optax.GradientTransformation,
        rounds: int,
        final_sparsity: float,
        initial_sparsity: float = 0.5,
        lam_max: float = 1e-3,
        lam_init: float = 5e-4,
        segments: int = 20,
        reconfig_interval: int = 1,
    ):
        for name, s in (("final_sparsity", final_sparsity), ("initial_sparsity", initial_sparsity)):
            if not 0 <= s < 1:
                raise UserError(f"feddip {name}={s!r}: use a fraction in [0, 1) (paper: 0.5-0.95)")
        if rounds < 1 or reconfig_interval < 1 or segments < 2:
            raise UserError(
                f"feddip rounds={rounds!r}, reconfig_interval={reconfig_interval!r}, "
                f"segments={segments!r}: use rounds >= 1, reconfig_interval >= 1, segments >= 2"
            )
        if lam_max < 0 or lam_init < 0:
            raise UserError(f"feddip lam_max={lam_max!r}, lam_init={lam_init!r}: use >= 0")
        self.loss_fn, self.local, self.rounds = loss_fn, local, rounds
        self.final, self.initial = final_sparsity, initial_sparsity
        self.lam = (lam_max, lam_init, segments)
        self.reconfig = reconfig_interval
        self._mask = jax.jit(magnitude_mask)
        self._round = jax.jit(self._round_fn)

    def sparsity(self, t: int) -> float:
        return sparsity_at(t, self.rounds, self.final, self.initial)

    def init(self, params) -> FedDIPState:
        return FedDIPState(params, self._mask(params, self.initial), 0)

    def _round_fn(self, params, mask, batches, weights, lam):
        clients = jax.vmap(lambda b: client_update(self.loss_fn, self.local, params, mask, b, lam))(
            batches
        )
        w = weights / jnp.sum(weights)
        return jax.tree.map(lambda c: jnp.tensordot(w, c, axes=1).astype(c.dtype), clients)

    def round(self, state: FedDIPState, batches, weights=None) -> FedDIPState:
        t, mask = state.round, state.mask
        if t % self.reconfig == 0 and t > 0:
            mask = self._mask(state.params, self.sparsity(t))
        n = jax.tree.leaves(batches)[0].shape[0]
        weights = jnp.ones(n) if weights is None else jnp.asarray(weights, jnp.float32)
        lam = lambda_at(t, self.rounds, *self.lam)
        params = self._round(state.params, mask, batches, weights, jnp.float32(lam))
        return FedDIPState(params, mask, t + 1)

    def final_mask(self, state: FedDIPState):
        """The mask of the finished model: the magnitude mask at the current s_t (s_f at T)."""
        return self._mask(state.params, self.sparsity(state.round))

    def sparse_params(self, state: FedDIPState):
        return jax.tree.map(jnp.multiply, state.params, self.final_mask(state))

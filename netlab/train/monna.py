"""MoNNA: Byzantine-robust decentralised SGD with local momentum and Nearest-Neighbour Averaging.
Farhadkhani, Guerraoui, Gupta, Hoang, Pinot & Stephan 2023, "Robust Collaborative Learning with
Linear Gradient Overhead" (ICML), Algorithm 1.

n workers, each with its own model theta_i; up to f of them are Byzantine. One step, honest i:

    m_i       <- beta m_i + (1 - beta) g_i          (local Polyak momentum, dampening beta)
    theta_i^+ =  theta_i - gamma m_i                (local half step)
    broadcast theta_i^+; receive theta_1^+ .. theta_n^+ (Byzantine rows arbitrary)
    theta_i   <- NNA_i = mean of the n - f received vectors closest in l2 to theta_i^+

NNA is the authors' "CVA with own pivot": the n - f nearest neighbours of the worker's own vector
(its own vector included, Byzantine vectors included if they are close). f = 0 is plain
averaging. Ties in distance go to the lower worker index (a stable sort), so every worker's choice
is deterministic. The cost is O(n^2 |theta|): every worker compares its vector with all n.

The local step is any optax optimizer; `local_optimizer(lr, beta)` is the paper's (momentum as an
exponential moving average with dampening beta, then -lr), so beta = 0 is plain SGD.

Two forms share the aggregation code:
- `step(...)`: workers as a leading axis of every leaf (vmap), for tests and toy benches;
- `MoNNA(loss_fn, local, mesh, axis)`: one worker per device of a mesh axis under `shard_map`;
  the half steps are `all_gather`ed (the only collective, n |theta| per worker per step). Every
  worker's state carries a leading worker axis sharded on the axis, so the gradient inside
  `shard_map` is the worker's own (a replicated input would get the psum over workers, see
  diloco.py).

Byzantine behaviour is simulated: the last f workers' broadcasts are replaced by `attack(...)`, an
omniscient attacker that sees the honest half steps and sends every honest worker the same vector
(sign flip, large noise, or "a little is enough", ALIE: Baruch, Baruch & Goldberg 2019). Their own
states are computed like the honest ones and ignored. Paper defaults (MNIST): n 26, f 5, lr 0.75
decayed as lr / (t/50 + 1), beta 0.99, 600 steps.
"""

import statistics
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.errors import UserError

ATTACKS = ("none", "sign_flip", "noise", "alie")


def local_optimizer(lr, beta: float = 0.99) -> optax.GradientTransformation:
    """The paper's local step: m <- beta m + (1 - beta) g, then theta <- theta - lr m."""
    if not 0 <= beta < 1:
        raise UserError(f"monna beta={beta!r}: use a momentum in [0, 1) (paper: 0.99)")
    return optax.chain(optax.ema(beta, debias=False), optax.scale_by_learning_rate(lr))


def sq_distances(received, pivot) -> jax.Array:
    """(n,) squared l2 distances between each received vector (leaves with a leading axis n) and
    the pivot (same tree, no leading axis), summed over all leaves."""
    per_leaf = jax.tree.map(
        lambda r, p: jnp.sum(jnp.square(r - p).reshape(r.shape[0], -1), axis=1), received, pivot
    )
    return sum(jax.tree.leaves(per_leaf))


def nna(received, pivot, keep):
    """Nearest-Neighbour Averaging: the mean of the `keep` (= n - f) received vectors closest to
    `pivot`, ties to the lower index. `keep` may be traced (one compile for several f)."""
    d = sq_distances(received, pivot)
    rank = jnp.argsort(jnp.argsort(d, stable=True), stable=True)  # rank of each worker
    w = (rank < keep).astype(d.dtype) / keep
    return jax.tree.map(lambda r: jnp.tensordot(w, r, axes=1).astype(r.dtype), received)


def attack(half, f: int, kind: str, key, scale: float = 1.0, z: float = None):
    """Replace the last f rows (workers) of `half` by the Byzantine vector, one for everyone.

    sign_flip: -scale * mean(honest); noise: mean(honest) + scale * N(0, I);
    alie: mean(honest) + z * std(honest) per coordinate, z by default the ALIE paper's
    z_max = Phi^-1((n - s) / n), s = floor(n / 2 + 1) - f."""
    if kind not in ATTACKS:
        raise UserError(f"monna attack={kind!r}: choose one of {ATTACKS}")
    leaves, tree = jax.tree.flatten(half)
    n = leaves[0].shape[0]
    if f == 0 or kind == "none":
        return half
    if z is None:
        s = n // 2 + 1 - f
        z = statistics.NormalDist().inv_cdf((n - s) / n)
    keys = jax.random.split(key, len(leaves))
    out = []
    for x, k in zip(leaves, keys):
        honest = x[: n - f]
        mu = jnp.mean(honest, axis=0)
        if kind == "sign_flip":
            byz = -scale * mu
        elif kind == "noise":
            byz = mu + scale * jax.random.normal(k, mu.shape, mu.dtype)
        else:
            byz = mu + z * jnp.std(honest, axis=0)
        out.append(jnp.concatenate([honest, jnp.broadcast_to(byz, (f, *mu.shape))]))
    return jax.tree.unflatten(tree, out)


def _check(n, f):
    if not 0 <= f or not 2 * f < n:
        raise UserError(
            f"monna f={f!r} with n={n} workers: use 0 <= f < n / 2 (an honest majority)"
        )


def step(
    loss_fn: Callable,
    local: optax.GradientTransformation,
    params,
    opt_state,
    batches,
    f: int,
    keep=None,
    kind: str = "none",
    key=None,
    scale: float = 1.0,
):
    """One MoNNA step, workers as the leading axis of `params`, `opt_state` and `batches`.

    `f` Byzantine workers (the last f) send `attack(kind)`; honest workers average their
    `keep` nearest (default n - f; `keep = n` is plain averaging under the same attack).
    Returns (params, opt_state, losses) with a leading worker axis."""
    n = jax.tree.leaves(params)[0].shape[0]
    _check(n, f)
    keep = n - f if keep is None else keep
    key = jax.random.key(0) if key is None else key

    def local_step(p, s, b):
        loss, g = jax.value_and_grad(loss_fn)(p, b)
        u, s = local.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    half, opt_state, losses = jax.vmap(local_step)(params, opt_state, batches)
    received = attack(half, f, kind, key, scale)
    params = jax.vmap(lambda pivot: nna(received, pivot, keep))(half)
    return params, opt_state, losses


class MoNNA:
    """MoNNA with one worker per device of mesh axis `axis` (n = its size).

    `init(params)` gives every worker the same parameters and local optimizer state (leading
    worker axis, sharded); `step(params, opt_state, batches, key)` runs one step where every leaf
    of `batches` is (n, ...)."""

    def __init__(
        self,
        loss_fn: Callable,
        local: optax.GradientTransformation,
        mesh: jax.sharding.Mesh,
        f: int = 0,
        axis: str = "data",
        kind: str = "none",
        scale: float = 1.0,
    ):
        if axis not in mesh.axis_names:
            raise UserError(
                f"monna axis={axis!r} is not a mesh axis; choose one of {mesh.axis_names}"
            )
        if kind not in ATTACKS:
            raise UserError(f"monna attack={kind!r}: choose one of {ATTACKS}")
        self.n = mesh.shape[axis]
        _check(self.n, f)
        self.loss_fn, self.local, self.mesh, self.axis = loss_fn, local, mesh, axis
        self.f, self.kind, self.scale = f, kind, scale
        self._step = jax.jit(self._step_fn)

    def init(self, params):
        def init(params):
            stack = lambda a: jnp.broadcast_to(a, (self.n, *jnp.shape(a)))
            return jax.tree.map(stack, params), jax.tree.map(stack, self.local.init(params))

        sh = NamedSharding(self.mesh, P(self.axis))
        return jax.jit(init, out_shardings=(sh, sh))(params)

    def _worker(self, params, opt_state, batches, key):
        one = lambda t: jax.tree.map(lambda a: a[0], t)
        p, s, b = one(params), one(opt_state), one(batches)
        loss, g = jax.value_and_grad(self.loss_fn)(p, b)
        u, s = self.local.update(g, s, p)
        half = optax.apply_updates(p, u)
        received = jax.lax.all_gather(half, self.axis)  # (n, ...): every worker's broadcast
        received = attack(received, self.f, self.kind, key, self.scale)
        new = nna(received, half, self.n - self.f)
        lead = lambda t: jax.tree.map(lambda a: a[None], t)
        return lead(new), lead(s), loss[None]

    def _step_fn(self, params, opt_state, batches, key):
        a = self.axis
        worker = jax.shard_map(
            self._worker,
            mesh=self.mesh,
            in_specs=(P(a), P(a), P(a), P()),
            out_specs=(P(a), P(a), P(a)),
        )
        return worker(params, opt_state, batches, key)

    def step(self, params, opt_state, batches, key=None) -> tuple[Any, Any, jax.Array]:
        key = jax.random.key(0) if key is None else key
        batches = jax.device_put(batches, NamedSharding(self.mesh, P(self.axis)))
        return self._step(params, opt_state, batches, key)

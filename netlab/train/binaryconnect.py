"""BinaryConnect: Courbariaux, Bengio & David 2015, "BinaryConnect: Training Deep Neural Networks
with binary weights during propagations" (NeurIPS), Algorithm 1.

The forward and backward passes use binary weights w_b in {-1, +1}; the optimizer updates
real-valued weights w, which accumulate the small gradient steps, and clips them to [-1, 1]
(Sec. 2.4: beyond that range a weight no longer changes w_b, and it would grow without bound).

- Deterministic binarisation (eq. 1): w_b = +1 if w >= 0 else -1.
- Stochastic binarisation (eqs. 2-3): w_b = +1 with probability sigma(w), else -1, where
  sigma(x) = clip((x + 1) / 2, 0, 1) is the hard sigmoid; then E[w_b] = w for w in [-1, 1].
- Backward (Algorithm 1, steps 2-3): dC/dw_b is computed with w_b in the forward and applied to
  w as it is (a straight-through estimator): the gradient with respect to the real weights is by
  construction the gradient with respect to the binary ones.
- Test time (Sec. 2.6): the binary weights for deterministic BinaryConnect, the real-valued
  weights for stochastic BinaryConnect (the paper's choice for each).

Only the weights that multiply activations are binarised (by default every leaf with ndim >= 2:
kernels, embeddings); biases and normalisation parameters stay real, as in the paper.

Two ways to use it:

1. In a task's own code, two halves used together:

    apply = binarized(model.apply, "stochastic")              # forward with w_b, STE backward
    loss = lambda p, x, key: ... apply({"params": p}, x, binary_rng=key) ...
    tx = optax.chain(optax.adam(lr), clip_weights())          # real-valued update, then [-1, 1]

2. From a config, with no change to the model: `optimizer.binaryconnect = "deterministic"` or
   `"stochastic"` wraps the optimizer in `binary_weights(inner)`, which keeps the real-valued
   weights in its own state and hands the model the binary ones as its parameters. The trainer's
   gradient is then dC/dw_b; `inner` turns it into an update of the real weights, which are
   clipped, binarised again, and the update it returns moves the parameters onto the new w_b
   (exactly, or within 2^-22 where float addition cannot land on +-1 from a real-valued
   initialisation; the error is not carried on). Two consequences: the first step's gradient
   is taken at the real-valued initialisation (there are no binary weights before the first
   update), and evaluation (and checkpoints' `params`) sees binary weights in both modes, a
   sample of them in stochastic mode; the real weights are the `real` field of the optimizer
   state.

Deliberate differences: the paper scales each layer's learning rate by its Glorot init range and
uses batch normalisation with Adam; those are ordinary optax/model choices here, not part of
the transform.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

MODES = ("deterministic", "stochastic")


def matrices(params):
    """The default mask: True for leaves with ndim >= 2 (kernels, embeddings)."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def hard_sigmoid(x):
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def binarize(w, key=None):
    """Eq. 1 (key None) or eqs. 2-3 (stochastic with `key`): values exactly -1 or +1."""
    one = jnp.ones_like(w)
    if key is None:
        return jnp.where(w >= 0, one, -one)
    return jnp.where(jax.random.uniform(key, w.shape) < hard_sigmoid(w), one, -one)


@jax.custom_vjp
def straight_through(w, w_b):
    """w_b in the forward pass; the cotangent of the output goes to w unchanged."""
    return w_b


def _ste_fwd(w, w_b):
    return w_b, None


def _ste_bwd(_, g):
    return g, jnp.zeros_like(g)


straight_through.defvjp(_ste_fwd, _ste_bwd)


def binarize_params(params, key=None, mask: Callable = matrices):
    """`params` with the masked leaves replaced by their binary weights (straight-through)."""
    leaves, treedef = jax.tree.flatten(params)
    flags = jax.tree.leaves(mask(params))
    out = []
    for i, (w, on) in enumerate(zip(leaves, flags)):
        if not on:
            out.append(w)
            continue
        k = None if key is None else jax.random.fold_in(key, i)
        out.append(straight_through(w, jax.lax.stop_gradient(binarize(w, k))))
    return jax.tree.unflatten(treedef, out)


def binarized(apply_fn, mode: str = "deterministic", mask: Callable = matrices):
    """Wrap a Flax `apply(variables, *args, **kwargs)` so that it runs with binary weights.

    The wrapped function takes `binary_rng=` (a key): with it, stochastic mode draws eqs. 2-3;
    without it (evaluation), stochastic mode uses the real-valued weights and deterministic mode
    the signs (Sec. 2.6)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {', '.join(MODES)}")

    def apply(variables, *args, binary_rng=None, **kwargs):
        if mode == "stochastic" and binary_rng is None:
            return apply_fn(variables, *args, **kwargs)
        key = binary_rng if mode == "stochastic" else None
        variables = dict(variables)
        variables["params"] = binarize_params(variables["params"], key, mask)
        return apply_fn(variables, *args, **kwargs)

    return apply


def _into_box(p, u, low, high):
    """u' with p + u' = clip(p + u, low, high) after rounding: float addition can overshoot the
    bound by one unit in the last place, so nudge u' toward zero until it does not."""
    u = jnp.clip(p + u, low, high) - p
    for _ in range(2):
        u = jnp.where(p + u > high, jnp.nextafter(u, -jnp.inf), u)
        u = jnp.where(p + u < low, jnp.nextafter(u, jnp.inf), u)
    return u


class ClipWeightsState(NamedTuple):
    pass


def clip_weights(low: float = -1.0, high: float = 1.0, mask: Callable = matrices):
    """The last link of a chain: the masked real-valued weights stay in [low, high] after
    `optax.apply_updates` (Algorithm 1, "clip")."""

    def init(params):
        return ClipWeightsState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("clip_weights needs the parameters: call update(grads, state, params)")
        flags = mask(params)
        out = jax.tree.map(
            lambda u, p, on: _into_box(p, u, low, high) if on else u, updates, params, flags
        )
        return out, state

    return optax.GradientTransformation(init, update)


def _land(p, b):
    """u with p + u as close to b = +-1 as float addition allows: exact when p is +-1 (b - p is
    0 or +-2) and nudged by ulps otherwise; some p (a real-valued initialisation) have no u with
    p + u == b exactly, and then p + u is within 2^-22 of b."""
    u = b - p
    for _ in range(2):
        miss = p + u
        u = jnp.where(miss > b, jnp.nextafter(u, -jnp.inf), u)
        u = jnp.where(miss < b, jnp.nextafter(u, jnp.inf), u)
    return u


class BinaryWeightsState(NamedTuple):
    real: Any  # the real-valued weights w (masked leaves; the others mirror the parameters)
    inner: Any
    count: jax.Array
    key: jax.Array  # uint32[2] PRNG key data (stochastic mode)


def binary_weights(
    inner: optax.GradientTransformation,
    mode: str = "deterministic",
    mask: Callable = matrices,
    seed: int = 0,
) -> optax.GradientTransformation:
    """Algorithm 1 as an optimizer: the parameters are w_b, the state holds w (see the module
    docstring, use 2)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {', '.join(MODES)}")

    def init(params):
        flags = mask(params)
        real = jax.tree.map(lambda p, on: jnp.clip(p, -1, 1) if on else p, params, flags)
        return BinaryWeightsState(
            real, inner.init(params), jnp.zeros([], jnp.int32), jax.random.PRNGKey(seed)
        )

    def update(grads, state, params=None):
        if params is None:
            raise ValueError(
                "binary_weights needs the parameters: call update(grads, state, params)"
            )
        flags = mask(params)
        real = jax.tree.map(lambda r, p, on: r if on else p, state.real, params, flags)
        u, inner_state = inner.update(grads, state.inner, real)
        new_real = jax.tree.map(
            lambda r, d, on: jnp.clip(r + d, -1, 1) if on else r + d, real, u, flags
        )
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)
        leaves, treedef = jax.tree.flatten(new_real)
        p_leaves, u_leaves = jax.tree.leaves(params), jax.tree.leaves(u)
        out = []
        for i, (r, p, d, on) in enumerate(zip(leaves, p_leaves, u_leaves, jax.tree.leaves(flags))):
            if not on:
                out.append(d)
                continue
            k = jax.random.fold_in(key, i) if mode == "stochastic" else None
            out.append(_land(p, binarize(r, k)))
        count = optax.safe_increment(state.count)
        return jax.tree.unflatten(treedef, out), BinaryWeightsState(
            new_real, inner_state, count, state.key
        )

    return optax.GradientTransformation(init, update)

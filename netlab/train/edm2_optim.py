"""EDM2's optimizer pieces: forced weight normalisation of the stored weights and the
inverse-square-root learning-rate decay (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models", Sec. 2, config E "controlling effective learning rate";
App. B Eq. 66 for the normalisation, as the authors' code cites it).

- `forced_weight_norm()`: EDM2 overwrites every MP weight w with normalize(w) (unit-RMS rows per
  output channel, Eq. 66) in each training forward pass, which keeps the weights' norm and so the
  effective learning rate fixed. A Flax forward pass cannot write its parameters, so here it is an
  optax transformation chained last (`optimizer.forced_weight_norm=True`): the update u becomes
  normalize(params + u) - params for every `mp_weight` leaf, other leaves pass. This differs from
  the authors' order (project, forward, step) only in when the projection happens: the forward
  pass sees the same normalised weights either way (the MP layers normalise again), and the EMA
  here averages projected rather than unprojected weights.
- `lr_decay(ref_lr, ref_steps, warmup_steps)`: alpha(t) = alpha_ref / sqrt(max(t / t_ref, 1)),
  the decay EDM2 pairs with forced weight normalisation, times a linear warm-up min(t / warmup, 1)
  counted from t = 0 (the authors' `learning_rate_schedule`); an optax schedule
  (`optimizer.schedule="inv_sqrt"` with `optimizer.ref_steps`). EDM2 counts t in training images
  (t_ref = ref_batches * batch); with a fixed batch size the same schedule in optimizer steps has
  ref_steps = ref_batches.

The MP layers themselves are netlab/diffusion/mp_layers.py; the shared math is
netlab/nn/mp_normalize.py.
"""

import jax
import jax.numpy as jnp
import optax

from netlab.nn.mp_normalize import WEIGHT, normalize_weight


def forced_weight_norm() -> optax.GradientTransformation:
    """Chain last: turns the update u into normalize(params + u) - params for every `mp_weight`,
    so the stored weights stay at unit RMS per output channel (EDM2 Eq. 66). Other leaves pass."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("forced_weight_norm needs params (optax.apply_updates order)")

        def one(path, u, p):
            if getattr(path[-1], "key", None) != WEIGHT:
                return u
            return normalize_weight(p + u) - p

        out = jax.tree_util.tree_map_with_path(one, updates, params)
        return out, state

    return optax.GradientTransformation(init, update)


def lr_decay(ref_lr: float, ref_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """EDM2's learning rate at step t: ref_lr / sqrt(max(t / ref_steps, 1)) * min(t / warmup, 1).

    `ref_steps=0` keeps ref_lr (after the warm-up)."""

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        lr = jnp.asarray(ref_lr, jnp.float32)
        if ref_steps > 0:
            lr = lr / jnp.sqrt(jnp.maximum(t / ref_steps, 1.0))
        if warmup_steps > 0:
            lr = lr * jnp.minimum(t / warmup_steps, 1.0)
        return lr

    return schedule

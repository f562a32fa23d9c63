"""Auxiliary losses and routing statistics travel in Flax collections, not in return values.

A layer that has an auxiliary loss (an MoE load-balance or router z-loss term) sows it, already
multiplied by its paper's weight, into `LOSSES`; diagnostics (dropped fraction, expert load) go to
`METRICS`. The task applies the model with `mutable=COLLECTIONS` and adds `total_loss(...)` to its
objective, so a block never needs to know whether its MLP is dense or sparse:

    out, cols = model.apply(variables, x, mutable=aux.COLLECTIONS)
    loss = task_loss + aux.total_loss(cols)
    metrics.update(aux.mean_metrics(cols))

The per-layer weighting follows the papers (Switch Transformer eq. 4 sums alpha * loss over
layers; ST-MoE adds the z-loss per layer), so the total is a sum over layers, not a mean.
"""

import jax
import jax.numpy as jnp

LOSSES = "aux_loss"
METRICS = "aux_metrics"
COLLECTIONS = (LOSSES, METRICS)


def _add(a, b):
    return a + b


def sow_loss(module, name: str, value) -> None:
    """Add a weighted scalar loss term under `name` (summed if a layer is called twice)."""
    module.sow(LOSSES, name, jnp.asarray(value, jnp.float32), reduce_fn=_add, init_fn=lambda: 0.0)


def sow_metric(module, name: str, value) -> None:
    """Record a scalar diagnostic under `name` (the last call wins)."""
    module.sow(
        METRICS,
        name,
        jnp.asarray(value, jnp.float32),
        reduce_fn=lambda a, b: b,
        init_fn=lambda: 0.0,
    )


def total_loss(collections) -> jax.Array:
    """Sum of every sown loss term (0.0 when no layer sowed one)."""
    leaves = jax.tree.leaves(dict(collections or {}).get(LOSSES, {}))
    return sum((jnp.sum(x) for x in leaves), jnp.zeros((), jnp.float32))


def loss_terms(collections) -> dict:
    """{term name: sum over layers}, e.g. {"load_balance": ..., "z_loss": ...}, for logging."""
    out = {}
    flat = jax.tree_util.tree_flatten_with_path(dict(collections or {}).get(LOSSES, {}))[0]
    for path, x in flat:
        name = str(getattr(path[-1], "key", path[-1]))
        out[name] = out.get(name, 0.0) + jnp.sum(x)
    return out


def mean_metrics(collections) -> dict:
    """{metric name: mean over the layers that sowed it}."""
    sums, counts = {}, {}
    flat = jax.tree_util.tree_flatten_with_path(dict(collections or {}).get(METRICS, {}))[0]
    for path, x in flat:
        name = str(getattr(path[-1], "key", path[-1]))
        sums[name] = sums.get(name, 0.0) + jnp.mean(x)
        counts[name] = counts.get(name, 0) + 1
    return {k: v / counts[k] for k, v in sums.items()}

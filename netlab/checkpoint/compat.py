"""What a checkpoint holds, as {path: [shape, dtype]}, and how two such summaries differ.

`state_summary` covers the whole train state (parameters, optimizer state, model state, EMA slots,
step), so resuming with another optimizer or with EMA added is refused by name before Orbax would
fail deep inside a tree mismatch. Paths are "/"-joined keys, the same for a live pytree and for
Orbax's saved tree metadata (which stores named tuples as dicts).
"""

import jax


def rest_items(state) -> dict:
    return {
        "step": state.step,
        "opt_state": state.opt_state,
        "model_state": state.model_state,
        "ema": state.ema,
    }


def _key(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def summary(tree, prefix=()) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(list(prefix) + [_key(k) for k in path]): [list(a.shape), str(a.dtype)]
        for path, a in flat
    }


def state_summary(abstract_state) -> dict:
    """{"params/...", "opt_state/...", "ema/...", ...: [shape, dtype]} of a whole train state."""
    return summary({"params": abstract_state.params, **rest_items(abstract_state)})


# What a difference in each part of the state means, most telling first.
PARTS = {
    "params": "a different model (parameters)",
    "model_state": "a different model state (batch statistics, routing biases)",
    "opt_state": "a different optimizer state (optimizer.name, clip_norm, weight_decay or "
    "momentum differ)",
    "ema": "other EMA slots (optimizer.ema_decay or ema_stds differ)",
    "step": "a different step counter",
}


def _show(entry) -> str:
    return "absent" if entry is None else f"{entry[0]} {entry[1]}"


def describe_difference(saved: dict, ours: dict) -> str | None:
    """One phrase naming what differs between two state summaries, or None if they match."""
    diff = [k for k in sorted(set(saved) | set(ours)) if saved.get(k) != ours.get(k)]
    if not diff:
        return None
    parts = {}
    for key in diff:
        parts.setdefault(key.split("/", 1)[0], []).append(key)
    order = sorted(parts, key=lambda p: list(PARTS).index(p) if p in PARTS else len(PARTS))
    keys = parts[order[0]]
    text = (
        f"{PARTS.get(order[0], order[0])}: {keys[0]} saved {_show(saved.get(keys[0]))} vs "
        f"config {_show(ours.get(keys[0]))}"
    )
    if len(keys) > 1:
        text += f" (+{len(keys) - 1} more)"
    if len(order) > 1:
        text += f"; {', '.join(order[1:])} differ too"
    return text

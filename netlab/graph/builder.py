"""Graph models from `config.model`, checked before anything is built (shared by every graph task).

`model_spec(config, policy, task)` looks `model.name` up in `registries.MODELS`, checks that the
model trains on this kind of task, that every other `model.*` key is one of its fields (or a key
the task reads itself, e.g. the recommendation losses' weights), that choice-valued fields hold a
valid choice (the class's `CHOICES`: a tuple or a registry) and that counts and rates lie in range,
and adds the precision policy (`dtype`, `param_dtype`, `remat_policy`). Every failure is a one-line
`UserError` naming the config key and the valid choices. The task then calls the returned
`ModelSpec` with what only the data can tell (number of classes, users, items).
"""

from __future__ import annotations

import dataclasses
import difflib

import numpy as np

from netlab.errors import UserError
from netlab.graph.registries import MODELS
from netlab.nn import precision
from netlab.registry import Registry, check_choice, check_range

TASK_NAMES = {
    "node": "graph.node_classification",
    "graph": "graph.graph_classification",
    "link": "graph.link_prediction",
    "digraph": "graph.digraph_clustering",
    "recsys": "graph.recommendation",
    "snapshot": "graph.snapshot_forecasting",
    "generation": "graph.generation",
    "nar": "graph.algorithmic_reasoning",
    "temporal": "graph.temporal_link",
}
# Ranges of common hyperparameters, by field name: (lo, hi, integer).
RANGES = {
    "dropout": (0.0, 1.0, False),
    "input_dropout": (0.0, 1.0, False),
    "edge_dropout": (0.0, 1.0, False),
    "alpha": (0.0, 1.0, False),
    "heads": (1, None, True),
    "out_heads": (1, None, True),
    "hidden": (1, None, True),
    "hidden_dim": (1, None, True),
    "hidden_channels": (1, None, True),
    "dim": (1, None, True),
    "key_dim": (1, None, True),
    "d": (1, None, True),
    "out": (1, None, True),
    "num_layers": (0, None, True),
    "k": (0, None, True),
    "hops": (0, None, True),
    "num_steps": (1, None, True),
    "max_steps": (1, None, True),
    "time": (0.0, None, False),
}


def policy_of(config, policy=None) -> precision.Policy:
    """The policy handed to the task, else the one `config.train` describes (float32 if none)."""
    if policy is not None:
        return policy
    if "train" in config and "compute_dtype" in config.train:
        return precision.from_config(config.train)
    return precision.Policy()


def float_dtype(policy: precision.Policy):
    """numpy dtype of the host arrays a task builds (features, edge weights, coefficients)."""
    return np.dtype(policy.float_dtype)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A checked model choice: `spec(**data_fields)` builds the module."""

    name: str
    cls: type
    kwargs: dict

    def __call__(self, **fixed):
        return self.cls(**{**self.kwargs, **fixed})


def model_names(task: str) -> list[str]:
    """Registered model names that train on `task` ("node", "graph", ...)."""
    return [n for n in MODELS.names() if getattr(MODELS.get(n), "TASK", None) == task]


def _fields(cls) -> set:
    if not dataclasses.is_dataclass(cls):
        return set()
    return {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}


def model_spec(
    config, policy: precision.Policy, task: str, consumed=(), defaults=None
) -> ModelSpec:
    """The model `config.model.name` names, checked for `task` (see the module docstring).
    `consumed`: `model.*` keys the task reads itself; `defaults`: values used when the config
    omits a key (e.g. `name` for configs written before the key existed)."""
    m = dict(defaults or {}, **dict(config.model))
    name = m.pop("name", None)
    cls = MODELS.get(name, "model.name")
    kind = getattr(cls, "TASK", None)
    if kind is not None and kind != task:
        raise UserError(
            f"model.name={name!r} trains with task {TASK_NAMES.get(kind, kind)!r}, "
            f"not {TASK_NAMES[task]!r}; for this task choose one of "
            f"{', '.join(model_names(task))}"
        )
    fields = _fields(cls)
    kwargs = {}
    for key, value in m.items():
        if key in fields:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        elif key not in consumed:
            valid = sorted((fields | set(consumed)) - {"dtype", "param_dtype", "remat_policy"})
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean 'model.{close[0]}'?" if close else ""
            raise UserError(
                f"unknown config key 'model.{key}' for model {name!r}{hint} "
                f"(its keys: {', '.join(valid)})"
            )
    for key, choices in getattr(cls, "CHOICES", {}).items():
        if key in kwargs:
            if isinstance(choices, Registry):
                choices.get(kwargs[key], f"model.{key}")
            else:
                check_choice(f"model.{key}", kwargs[key], choices)
    for key, (lo, hi, integer) in RANGES.items():
        if key in kwargs:
            check_range(f"model.{key}", kwargs[key], lo, hi, integer=integer)
    if "dtype" in fields:
        kwargs["dtype"] = policy.compute_dtype
    if "param_dtype" in fields:
        kwargs["param_dtype"] = policy.param_dtype
    if policy.remat != "none":
        if "remat_policy" not in fields:
            able = [n for n in MODELS.names() if "remat_policy" in _fields(MODELS.get(n))]
            raise UserError(
                f"train.remat={policy.remat!r}: model.name={name!r} has no "
                f"rematerialisation; set train.remat=none (graph models with it: "
                f"{', '.join(able)})"
            )
        kwargs["remat_policy"] = policy.remat_policy
    return ModelSpec(name, cls, kwargs)


__all__ = ["ModelSpec", "float_dtype", "model_names", "model_spec", "policy_of"]

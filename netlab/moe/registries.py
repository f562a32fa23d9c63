"""The interchangeable parts of the MoE pillar, each named by one config key.

Every entry is registered with a decorator in the module that defines it, so a new router, dispatch
backend or model is one new file under `netlab/moe/` plus its test. A config may also name a part
of its own by import path, e.g. `--config.model.moe.router=my_pkg.routers:MyRouter`.

- ROUTERS (`model.moe.router`): a `netlab.moe.routing.Router` subclass: `route(layer, x, train)`
  maps a (groups, tokens, embed) batch to a `Routing`; class attributes say whether it is causal,
  whether it is a token choice and which backends it works with (routing.py says more).
- BACKENDS (`model.moe.backend`): a `netlab.moe.dispatch.Backend` subclass:
  `run(routing, x, w, spec) -> y` moves the tokens to the stacked experts and back; `fallback`
  names the backend to run instead where this one cannot (no expert mesh axis, XLA:CPU).
- MODELS (`model.name`): a Flax module class built from the `config.model` fields; `inputs`
  says what it reads ("tokens" or "images"), `num_moe_layers()` how many MoE layers it has.
"""

from netlab.registry import Registry

_PKG = ("netlab.moe",)
_VIT = "configs/moe/vit_moe_digits.py:cpu"

ROUTERS = Registry("router", "model.moe.router", _PKG, example=_VIT)
BACKENDS = Registry("backend", "model.moe.backend", _PKG, example=_VIT)
MODELS = Registry("moe_model", "model.name", _PKG, example=_VIT)

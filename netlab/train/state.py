"""TrainState: the one pytree the trainer shards, steps and checkpoints."""

from typing import Any

import flax.struct


@flax.struct.dataclass
class TrainState:
    step: Any  # int32 scalar: optimizer updates applied so far
    params: Any  # float32 parameters
    opt_state: Any
    model_state: Any  # non-parameter collections (batch stats, routing biases, ...)
    ema: Any  # {slot name: params-shaped EMA}; empty when off

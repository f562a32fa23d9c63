"""The Task protocol: what a model family gives the trainer.

A task owns the model, the data and the loss; `netlab.train` owns the mesh, sharding, optimizer,
checkpoints, metrics and the loop. The config names the task by import path
(`config.task = "netlab.graph.task:NodeClassification"`), and the trainer calls
`cls(config)` lazily, so a family's code is imported only when it is used.

Contract (all arrays are numpy on the host unless stated):

- `init_variables(rng) -> dict` pure: `model.init(rng, *example_inputs)`. Must be traceable by
  `jax.eval_shape`. Collections other than "params" (batch stats, routing biases kept outside the
  parameters, ...) become `TrainState.model_state`.
- `batch_axes() -> pytree` of tuples of logical axis names, one tuple per leaf of a batch, e.g.
  `{"image": ("batch", None, None, None), "label": ("batch",)}`; use `None` entries (or `()`) for a
  replicated leaf (a full-batch graph).
- `global_batch_size() -> int`: rows of the leading `batch` axis (0 when nothing is batch-sharded).
- `train_batch(step, process_index, process_count) -> pytree`: this process's rows of the global
  batch for `step`; a pure function of (config.seed, step, process_index), so resumed runs are
  bit-identical. Leaves whose axes are replicated are returned whole by every process. Draw data
  randomness from its own generator (e.g. `np.random.default_rng([seed, step, tag])`), never from
  `fold_in(key(seed), step)`: that is the trainer's stream handed to loss_fn, and with partitionable
  threefry `split(k, 2)[i] == split(k, 3)[i]`, so "independent" draws can silently coincide.
- `loss_fn(params, model_state, batch, rng, train) -> (loss, (metrics, new_model_state))`: pure and
  jittable; `metrics` is a flat dict of scalar arrays (means over the global batch).
- `evaluate(params, model_state, step, workdir) -> (scalars, images)`: runs on every process (the
  parameters are global arrays); `scalars` is a flat dict of floats, `images` a dict of
  name -> uint8 HxWx3 (or HxW) arrays that the lead process saves as PNG and logs to TensorBoard.
"""
from typing import Any, Protocol

import ml_collections


class Task(Protocol):
    config: ml_collections.ConfigDict

    def init_variables(self, rng) -> dict: ...

    def batch_axes(self) -> Any: ...

    def global_batch_size(self) -> int: ...

    def train_batch(self, step: int, process_index: int, process_count: int) -> Any: ...

    def loss_fn(self, params, model_state, batch, rng, train: bool): ...

    def evaluate(self, params, model_state, step: int, workdir: str): ...

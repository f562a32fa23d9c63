"""The Task protocol: what a model family gives the trainer.

A task owns the model, the data and the loss; `netlab.train` owns the mesh, sharding, optimizer,
precision, checkpoints, metrics and the loop. The config names the task by a short registered name
(`config.task = "graph.node_classification"`, see `TASKS`) or by import path
(`"netlab.graph.task:NodeClassification"`), and the trainer calls `cls(config, policy=policy)`
lazily, so a family's code is imported only when it is used. `policy` is the
`netlab.nn.precision.Policy` built from `config.train` (compute dtype, param dtype, remat); a task
hands it to its model builder and must accept `policy=None` (then it builds it from the config, for
notebooks and tests).

Contract (all arrays are numpy on the host unless stated):

- `init_variables(rng) -> dict` pure: `model.init(rng, *example_inputs)`. Must be traceable by
  `jax.eval_shape`. Collections other than "params" (batch stats, routing biases kept outside the
  parameters, ...) become `TrainState.model_state`.
- `batch_axes() -> pytree` of tuples of logical axis names, one tuple per leaf of a batch, e.g.
  `{"image": ("batch", None, None, None), "label": ("batch",)}`; use `None` entries (or `()`) for a
  replicated leaf (a full-batch graph).
- `global_batch_size() -> int`: rows of the leading `batch` axis (0 when nothing is batch-sharded).
- `train_batch(step) -> pytree`: the whole global batch for `step`; a pure function of
  (config.seed, step), so resumed runs are bit-identical. The trainer, not the task, cuts each
  process's contiguous block of rows out of the leaves with a leading `batch` axis; leaves whose
  axes are replicated are used whole. Draw data
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

from netlab.registry import Registry

# Short task names -> import paths (imported only when a config names them).
TASKS = Registry(
    "task",
    "task",
    example="configs/classify_digits.py:cpu",
    lazy={
        "classify.digits": "netlab.classify.task:DigitsClassification",
        "classify.timeseries_toy": "netlab.classify.timeseries:TimeSeriesForecasting",
        "diffusion.toy2d": "netlab.diffusion.task:Toy2D",
        "diffusion.digits": "netlab.diffusion.task:DigitsDiffusion",
        "diffusion.image": "netlab.diffusion.image_task:ImageDiffusion",
        "diffusion.cas_dm_digits": "netlab.diffusion.cas_task:CasDMDigits",
        "diffusion.toy2d_ddm": "netlab.diffusion.ddm_task:DDMToy2D",
        "diffusion.digits_ddm": "netlab.diffusion.ddm_task:DDMDigits",
        "diffusion.gan_toy2d": "netlab.diffusion.gan_task:GANToy2D",
        "diffusion.digits_bridge": "netlab.diffusion.bridge_task:DigitsBridge",
        "diffusion.digits_gan": "netlab.diffusion.gan_digits_task:DiffusionGANDigits",
        "diffusion.digits_distill": "netlab.diffusion.distill_task:DistilledDigits",
        "diffusion.digits_ddgan": "netlab.diffusion.ddgan_digits_task:DDGANDigits",
        "moe.byte_lm": "netlab.moe.task:ByteLM",
        "moe.vit_digits": "netlab.moe.task:ViTMoEDigits",
        "moe.digits": "netlab.moe.task:MoEDigits",
        "graph.node_classification": "netlab.graph.task:NodeClassification",
        "graph.graph_classification": "netlab.graph.task:GraphClassification",
        "graph.link_prediction": "netlab.graph.task:LinkPrediction",
        "graph.continuous_node_classification": "netlab.graph.continuous_task:DiffusionNodeClassification",  # noqa: E501
        "graph.digraph_clustering": "netlab.graph.digrac_task:DigraphClustering",
        "graph.recommendation": "netlab.graph.recsys_task:Recommendation",
        "graph.generation": "netlab.graph.digress:GraphGeneration",
        "graph.snapshot_forecasting": "netlab.graph.gcrn:SnapshotForecasting",
        "graph.temporal_link": "netlab.graph.temporal_task:TemporalLinkPrediction",
        "graph.algorithmic_reasoning": "netlab.graph.nar_task:AlgorithmicReasoning",
        "graph.gkedm_distillation": "netlab.graph.gkedm_task:GKEDMDistillation",
    },
)


class Task(Protocol):
    config: ml_collections.ConfigDict

    def init_variables(self, rng) -> dict: ...

    def batch_axes(self) -> Any: ...

    def global_batch_size(self) -> int: ...

    def train_batch(self, step: int) -> Any: ...

    def loss_fn(self, params, model_state, batch, rng, train: bool): ...

    def evaluate(self, params, model_state, step: int, workdir: str): ...

"""The Trainer joins a Task with a mesh, shardings, an optimizer and EMA into jitted functions.

Construction validates everything (mesh vs devices, batch vs data-parallel size, optimizer names)
before anything is written anywhere, so a bad config fails fast with a one-line error.

Shardings follow DESIGN.md: `jax.eval_shape` of the boxed init -> logical partition specs -> mesh
specs via the config's rules (+ FSDP fallback for unannotated large leaves) -> `jit(init,
out_shardings=...)`. The train step is jitted with the same shardings and donates the state.
"""

import contextlib
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.errors import UserError
from netlab.nn import precision
from netlab.sharding import mesh as meshlib
from netlab.sharding.axes import MESH_AXES
from netlab.train import dpsgd, optim
from netlab.train import ema as emalib
from netlab.train import islands as islandslib
from netlab.train.state import TrainState
from netlab.train.task import TASKS


def _is_axes(x):
    return x is None or type(x) is tuple


def build_task(config, policy=None):
    """The task named by `config.task` (registered name or 'module:Class'), built with `policy`."""
    policy = policy or precision.from_config(config.train)
    return TASKS.get(config.task)(config, policy=policy)


def process_rows(x, process_index: int, process_count: int):
    """This process's contiguous block of the leading axis (the layout make_array_from_process_local_data expects)."""  # noqa: E501
    local = x.shape[0] // process_count
    return x[process_index * local : (process_index + 1) * local]


def _rows_are_process_block(sharding, shape, process_index: int, process_count: int) -> bool:
    """Whether the batch rows this process's devices hold are exactly its contiguous block (the
    usual layout: the batch axes are the process-major mesh axes)."""
    rows = set()
    for idx in sharding.addressable_devices_indices_map(tuple(shape)).values():
        rows.update(range(*idx[0].indices(shape[0])))
    local = shape[0] // process_count
    return rows == set(range(process_index * local, (process_index + 1) * local))


def _pipeline_microbatches(config, num_devices: int):
    """With mesh.stage > 1 the pipeline cuts each batch into microbatches itself: a model without
    its own `model.pipeline_microbatches` takes `train.grad_accum` (then 1 for the trainer)."""
    stages = meshlib.mesh_shape(config.mesh, num_devices)[MESH_AXES.index("stage")]
    model = config.get("model")
    accum = int(config.train.grad_accum)
    if stages > 1 and model is not None and not model.get("pipeline_microbatches") and accum > 1:
        with config.unlocked():
            config.model.pipeline_microbatches, config.train.grad_accum = accum, 1


def _check_pipeline(config, mesh):
    stages = mesh.shape["stage"]
    if stages == 1:
        return
    micro = int((config.get("model") or {}).get("pipeline_microbatches", 0))
    if micro < stages:
        raise UserError(
            f"mesh.stage={stages} needs a pipelined model with at least {stages} microbatches: set "
            f"train.grad_accum (or model.pipeline_microbatches) >= {stages}; the DiT and the MoE "
            "LM stack their blocks into a pipeline, other models have none (use mesh.stage=1)"
        )
    if int(config.train.grad_accum) > 1:
        raise UserError(
            f"train.grad_accum={config.train.grad_accum} with mesh.stage={stages}: the pipeline "
            f"already splits each batch into model.pipeline_microbatches={micro}; set "
            "train.grad_accum=1"
        )


class Trainer:
    def __init__(self, config, devices=None, task=None):
        self.config = config
        self.policy = precision.from_config(config.train)
        if task is None:
            _pipeline_microbatches(config, len(jax.devices() if devices is None else devices))
        self.task = task if task is not None else build_task(config, self.policy)
        self.mesh = meshlib.make_mesh(config.mesh, devices)
        _check_pipeline(config, self.mesh)
        self.rules = meshlib.rules(config.sharding)
        self.total_steps = int(config.train.steps)
        self.tx = optim.build(config.optimizer, self.total_steps)
        if hasattr(self.task, "wrap_optimizer"):  # e.g. WSN's freezing (classify/continual_wsn.py)
            self.tx = self.task.wrap_optimizer(self.tx)
        self.lr_schedule = optim.learning_rate(config.optimizer, self.total_steps)
        self.ema_slots = emalib.names(config.optimizer)
        # Islands mode (netlab/train/islands.py): None unless config.islands.sync_every >= 1.
        # A task that maps its own parameters onto the island axis (DDM's experts, one per
        # island, trained without talking to each other) needs no DiLoCo.
        self.islands = (
            None
            if getattr(self.task, "owns_island_axis", False)
            else islandslib.from_config(
                config, self.mesh, self.total_steps, self.lr_schedule, config.optimizer.warmup_steps
            )
        )
        if self.islands:
            self.rules = self.islands.rules(self.rules)
        self._check_batch()
        self._sync_each_step = self.mesh.devices.flat[0].platform == "cpu" and self.mesh.size > 1
        key = jax.random.key(0)  # outside the mesh: compile-only (AOT TPU) devices cannot run it
        with self.context():
            self.abstract_boxed = jax.eval_shape(self._init_boxed, key)
            self.state_shardings = meshlib.state_shardings(
                self.abstract_boxed, self.mesh, self.rules, config.sharding.fsdp_min_bytes
            )
            self.batch_axes = self.task.batch_axes()
            self.batch_shardings = jax.tree.map(
                lambda a: meshlib.logical_sharding(self.mesh, self.rules, a or ()),
                self.batch_axes,
                is_leaf=_is_axes,
            )
        if self.islands:
            self.islands.check(
                int(self.task.global_batch_size()),
                meshlib.data_parallel_size(self.mesh, self.rules),
                int(config.train.grad_accum),
                self.abstract_boxed.model_state,
            )
            self.batch_shardings = self.islands.batch_shardings(
                self.batch_axes, self.batch_shardings
            )
        # DP-SGD (netlab/train/dpsgd.py): None unless optimizer.dp_clip_norm > 0.
        self.dp = dpsgd.from_config(
            config,
            self.task,
            islands=self.islands,
            stages=self.mesh.shape["stage"],
            model_state=self.abstract_boxed.model_state,
            batch_axes=self.batch_axes,
            lead=jax.process_index() == 0,
        )
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            meshlib.strip_boxes(self.abstract_boxed),
            self.state_shardings,
        )
        self._init = jax.jit(
            lambda r: nn.unbox(self._init_boxed(r)), out_shardings=self.state_shardings
        )
        jit_step = functools.partial(
            jax.jit,
            in_shardings=(self.state_shardings, self.batch_shardings),
            out_shardings=(self.state_shardings, None),
            donate_argnums=0,
        )
        if self.islands:  # an inner step, and an inner step ending with the outer step
            self._step = jit_step(functools.partial(self.islands.train_step, self, sync=False))
            self._sync_step = jit_step(functools.partial(self.islands.train_step, self, sync=True))
        else:
            self._step = jit_step(self._train_step)

    # ----------------------------------------------------------------------------------------------
    def context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack

    def _check_batch(self):
        gbs = int(self.task.global_batch_size())
        if not gbs:
            axes = jax.tree.leaves(self.task.batch_axes(), is_leaf=_is_axes)
            if any(a and a[0] == "batch" for a in axes):
                raise UserError(
                    f"train.batch_size={self.config.train.batch_size}: this task "
                    "trains on mini-batches; expected an integer >= 1"
                )
            return
        dp = meshlib.data_parallel_size(self.mesh, self.rules)
        accum = int(self.config.train.grad_accum)
        if accum < 1:
            raise UserError(f"train.grad_accum={accum}; use an integer >= 1")
        if gbs % accum or (gbs // accum) % dp:
            raise UserError(
                f"global batch {gbs} with grad_accum={accum} gives micro-batches of {gbs / accum:g} rows, "  # noqa: E501
                f"not divisible by the data-parallel size {dp} (data*fsdp*expert); "
                f"set train.batch_size to a multiple of {dp * accum}"
            )
        if gbs % jax.process_count():
            raise UserError(
                f"global batch {gbs} is not divisible by the {jax.process_count()} processes"
            )

    def _init_boxed(self, rng):
        variables = dict(self.task.init_variables(rng))
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=(
                self.islands.init_boxed(params, self.tx.init(params))
                if self.islands
                else self.tx.init(params)
            ),
            model_state=variables,
            ema={name: params for name in self.ema_slots},
        )

    def init_state(self) -> TrainState:
        with self.context():
            return self._init(jax.random.key(self.config.seed))

    # ----------------------------------------------------------------------------------------------
    def global_batch(self, step: int):
        """The task's batch for `step`, cut to this process's rows and assembled into global arrays."""  # noqa: E501
        pc, pi = jax.process_count(), jax.process_index()
        full = self.task.train_batch(int(step))

        def one(axes, sharding, x):
            x = np.asarray(x)
            batched = bool(axes) and axes[0] == "batch"
            if batched and pc > 1 and not _rows_are_process_block(sharding, x.shape, pi, pc):
                # e.g. a `stage` axis across processes: this process's devices hold rows of other
                # processes' blocks, so every process passes the rows its devices address
                if getattr(self.task, "process_local_rows", False):
                    raise UserError(
                        "this task reads only its process's block of batch rows, but the mesh "
                        f"{dict(self.mesh.shape)} gives each process's devices other rows (a "
                        "stage or island axis across processes); keep those axes inside a process"
                    )
                return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
            local = process_rows(x, pi, pc) if batched else x
            return jax.make_array_from_process_local_data(sharding, local, x.shape)

        return jax.tree.map(one, self.batch_axes, self.batch_shardings, full, is_leaf=_is_axes)

    def _loss_and_grad(self, params, model_state, batch, rng):
        if self.dp:
            return self.dp(self.task.loss_fn, params, model_state, batch, rng)
        fn = jax.value_and_grad(self.task.loss_fn, has_aux=True)
        (loss, (metrics, model_state)), grads = fn(params, model_state, batch, rng, True)
        return loss, metrics, model_state, grads

    def _grads(self, params, model_state, batch, rng):
        """(loss, metrics, model_state, grads), averaged over train.grad_accum micro-batches."""
        accum = int(self.config.train.grad_accum)
        if accum == 1:
            return self._loss_and_grad(params, model_state, batch, rng)

        def split(axes, x):
            if not axes or axes[0] != "batch":
                raise UserError(
                    "train.grad_accum > 1 needs every batch leaf to have a leading 'batch' axis"
                )
            x = x.reshape((accum, x.shape[0] // accum) + x.shape[1:])
            return nn.with_logical_constraint(x, (None,) + tuple(axes))

        micro = jax.tree.map(split, self.batch_axes, batch, is_leaf=_is_axes)

        def body(carry, inputs):
            i, mb = inputs
            grads_sum, model_state = carry
            loss, metrics, model_state, grads = self._loss_and_grad(
                params, model_state, mb, jax.random.fold_in(rng, i)
            )
            grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
            return (grads_sum, model_state), (loss, metrics)

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, model_state), (losses, metrics) = jax.lax.scan(
            body, (zeros, model_state), (jnp.arange(accum), micro)
        )
        grads = jax.tree.map(lambda g: g / accum, grads)
        loss, metrics = losses.mean(), jax.tree.map(lambda m: m.mean(0), metrics)
        return loss, metrics, model_state, grads

    def _train_step(self, state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.key(self.config.seed), state.step)
        loss, metrics, model_state, grads = self._grads(state.params, state.model_state, batch, rng)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            model_state=model_state,
            ema=emalib.update(state.ema, params, state.step, self.ema_slots),
        )
        metrics = dict(
            metrics, loss=loss, grad_norm=optax.tree.norm(grads), lr=self.lr_schedule(state.step)
        )
        return new_state, metrics

    def step_fn(self, step: int):
        """The jitted program that advances a state holding `step` updates."""
        if self.islands and self.islands.syncs_after(step):
            return self._sync_step
        return self._step

    def train_step(self, state, batch, step=None):
        """One step; `step` (the updates in `state`, read from it when None) picks the islands
        program."""
        fn = self.step_fn(int(state.step) if step is None and self.islands else step or 0)
        with self.context():
            state, metrics = fn(state, batch)
        if self._sync_each_step:
            # XLA:CPU runs fake devices on one thread pool: two programs with collectives in flight
            # can starve each other's rendezvous, so keep one step in flight on CPU.
            jax.block_until_ready(state)
        return state, metrics

    def with_params(self, state: TrainState, params) -> TrainState:
        """`state` with new parameters (checkpoint.init_from); islands restart from them."""
        if not self.islands:
            return state.replace(params=params)
        with self.context():
            fn = jax.jit(self.islands.with_params, out_shardings=self.state_shardings)
            return fn(state, params)

    def eval_params(self, state: TrainState):
        """Parameters to evaluate: the first EMA slot when EMA is on, else the raw parameters."""
        return next(iter(state.ema.values())) if state.ema else state.params

    def evaluate(self, state: TrainState, workdir: str):
        with self.context():
            return self.task.evaluate(
                self.eval_params(state), state.model_state, int(state.step), workdir
            )

    def param_summary(self) -> dict:
        """{path: [shape, dtype]} of the parameters, to tell one model's checkpoint from another's."""  # noqa: E501
        flat = jax.tree_util.tree_flatten_with_path(self.abstract_state.params)[0]
        return {jax.tree_util.keystr(p): [list(a.shape), str(a.dtype)] for p, a in flat}

    def num_params(self) -> int:
        return sum(math.prod(a.shape) for a in jax.tree.leaves(self.abstract_state.params))

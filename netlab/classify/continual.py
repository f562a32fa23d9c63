"""Split digits, learned one task after another by a task-conditioned hypernetwork (von Oswald et
al. 2020; netlab/nn/cl_hypernetwork.py): `task = "netlab.classify.continual:ContinualDigits"`,
configs/classify_continual_digits.py.

The ten digits form `data.num_tasks` tasks of consecutive classes ({0, 1}, {2, 3}, ... for 5 tasks),
each a `10 / num_tasks`-way problem with the task identity given (task-incremental learning, the
paper's CL1 split-MNIST setting). `train.steps` are divided evenly: step s trains task
s // (steps / num_tasks) on that task's images only.

What the trainer's single loop needs for a task sequence is kept in the model state (a collection
beside the params, updated by the loss function): at the first step of task T the current
hypernetwork parameters become the anchor Theta_h* and the finished task's embedding e^(T-1) is
stored (frozen: later steps use the stored copy, which the optimizer never touches, so Adam's
momentum and weight decay cannot move it). The loss is the task's cross-entropy plus
`model.beta` times the output regulariser over the stored embeddings of the earlier tasks
(`model.beta = 0`: plain fine-tuning of the hypernetwork, the forgetting baseline).

Evaluation reports the test accuracy of every task seen so far (`acc_task<t>`, each with its
stored embedding; the current task with its trained one) and their mean `test_accuracy`.
Limits: `train.grad_accum` must stay 1 and islands are not supported (the boundary update would
run per micro-batch or per island).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.data import digits
from netlab.errors import UserError
from netlab.nn import cl_hypernetwork as clh
from netlab.registry import check_range


class ContinualDigits:
    def __init__(self, config, policy=None):
        self._setup_tasks(config)
        m = config.model
        self.sizes = (64, *tuple(m.target_hidden), self.classes)
        self.beta = check_range("model.beta", float(m.beta), 0.0)
        self.hnet = clh.TaskHyperNetwork(
            clh.num_weights(self.sizes),
            hidden=tuple(m.hidden),
            chunk_size=int(m.chunk_size),
            chunk_dim=int(m.chunk_dim),
        )
        self.embed_dim = int(m.embed_dim)
        self._eval = jax.jit(self._logits)

    def _setup_tasks(self, config):
        """The task split and its data (shared with netlab/classify/continual_wsn.py)."""
        self.config = config
        d = config.data
        self.num_tasks = check_range("data.num_tasks", d.num_tasks, 1, 10, integer=True)
        if 10 % self.num_tasks:
            raise UserError(
                f"data.num_tasks={self.num_tasks}: choose a divisor of 10 (1, 2, 5, 10)"
            )
        if self.num_tasks == 10:
            raise UserError(
                "data.num_tasks=10: one class per task has nothing to learn; use 2 or 5"
            )
        self.classes = 10 // self.num_tasks
        steps = int(config.train.steps)
        if steps < self.num_tasks:
            raise UserError(f"train.steps={steps}: at least one step per task ({self.num_tasks})")
        if int(config.train.get("grad_accum", 1)) != 1:
            raise UserError("train.grad_accum: the continual task needs 1 (one boundary per step)")
        self.steps_per_task = steps // self.num_tasks
        self.data = digits.load(d.test_fraction)
        self.batch_size = int(config.train.batch_size)
        self._by_task = [
            np.flatnonzero(self.data["train_y"] // self.classes == t) for t in range(self.num_tasks)
        ]

    # ---------------------------------------------------------------------------------------------
    def _generate(self, theta, e):
        return self.hnet.apply({"params": theta}, e)

    def init_variables(self, rng):
        k1, k2 = jax.random.split(rng)
        emb = jax.random.normal(k1, (self.num_tasks, self.embed_dim)) * 0.1
        theta = self.hnet.init(k2, emb[0])["params"]
        stored = jnp.zeros_like(emb)
        return {
            "params": {"hnet": theta, "emb": emb},
            "continual": {"anchor": theta, "stored": stored},
        }

    def batch_axes(self):
        return {"image": ("batch", None), "label": ("batch",), "task": (), "first": ()}

    def global_batch_size(self):
        return self.batch_size

    def task_of(self, step):
        return min(int(step) // self.steps_per_task, self.num_tasks - 1)

    def train_batch(self, step):
        task = self.task_of(step)
        rows = self._by_task[task]
        rng = np.random.default_rng([self.config.seed, step, 7])
        idx = rows[rng.integers(0, len(rows), self.batch_size)]
        return {
            "image": self.data["train_x"][idx].reshape(self.batch_size, -1),
            "label": (self.data["train_y"][idx] % self.classes).astype(np.int32),
            "task": np.int32(task),
            "first": np.bool_(task > 0 and step == task * self.steps_per_task),
        }

    def loss_fn(self, params, model_state, batch, rng, train):
        state = model_state["continual"]
        task, first = batch["task"], batch["first"]
        theta = params["hnet"]
        # task boundary: the current hypernetwork becomes Theta*, the finished embedding is stored
        anchor = jax.tree.map(lambda a, p: jnp.where(first, p, a), state["anchor"], theta)
        prev = jnp.maximum(task - 1, 0)
        stored = jnp.where(
            first, state["stored"].at[prev].set(params["emb"][prev]), state["stored"]
        )
        anchor, stored = jax.lax.stop_gradient((anchor, stored))
        weights = self._generate(theta, params["emb"][task])
        logits = clh.mlp_apply(weights, self.sizes, batch["image"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        mask = (jnp.arange(self.num_tasks) < task).astype(jnp.float32)
        reg = clh.output_regulariser(self._generate, theta, anchor, stored, mask, self.beta)
        metrics = {
            "accuracy": (logits.argmax(-1) == batch["label"]).mean(),
            "cross_entropy": ce,
            "output_reg": reg,
            "task": task.astype(jnp.float32),
        }
        return ce + reg, (metrics, {"continual": {"anchor": anchor, "stored": stored}})

    # ---------------------------------------------------------------------------------------------
    def _logits(self, params, stored, x, t, use_stored):
        e = jnp.where(use_stored, stored[t], params["emb"][t])
        return clh.mlp_apply(self._generate(params["hnet"], e), self.sizes, x)

    def evaluate(self, params, model_state, step, workdir):
        params = jax.device_get(params)
        stored = np.asarray(jax.device_get(model_state["continual"]["stored"]))
        current = self.task_of(max(int(step) - 1, 0))
        x, y = self.data["test_x"], self.data["test_y"]
        scalars = {}
        for t in range(current + 1):
            rows = y // self.classes == t
            xt = x[rows].reshape(rows.sum(), -1)
            logits = self._eval(params, stored, xt, t, t < current)
            scalars[f"acc_task{t}"] = float(
                (np.asarray(logits).argmax(-1) == y[rows] % self.classes).mean()
            )
        scalars["test_accuracy"] = float(np.mean(list(scalars.values())))
        return scalars, {}

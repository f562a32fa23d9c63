"""Split digits learned task after task by Winning SubNetworks (Kang et al. 2022, "Forget-free
Continual Learning with Winning Subnetworks", ICML) or SoftNet's soft masks (Kang et al. 2023,
ICLR): `configs/classify_continual_digits.py:method=wsn` (or `method=softnet`), the same tasks as
the hypernetwork method (`ContinualDigits`, netlab/classify/continual.py: `data.num_tasks` tasks
of consecutive classes, task identity given, `train.steps` split evenly).

One MLP 64 -> `model.hidden` -> classes per task is shared by all tasks; every task t has its own
real-valued scores s_t (one per weight, params["scores"][t]) and trains the subnetwork
w * m_t, m_t = the top `model.capacity` fraction of |s_t| per kernel (`wsn.masked`: the
straight-through mask, so the loss trains both w and s_t). The optimizer (the trainer's, wrapped
by `wrap_optimizer`, a hook of the trainer) ends with `wsn.freeze_finished_tasks`: at each task
boundary the finished task's mask joins the used set M, the used weights stop moving, and every
score but the current task's is left as it is. Task t's subnetwork, hence its predictions, are
then the same after any later task (forget-free; tests/classify/test_continual_wsn.py). Biases
are shared and frozen after the first task (WSN masks the kernels).

SoftNet: during training the mask is 1 on the top-c weights and U(0, 1) (drawn every step) on the
rest (`wsn.soft_mask`); the evaluation uses the hard top-c mask, the major subnetwork that is
frozen, so the forget-free property holds for it as for WSN. (SoftNet targets few-shot
class-incremental sessions; here it is the regularised variant on the same split.)

Evaluation reports `acc_task<t>` for every task seen so far (each with its own mask) and their
mean `test_accuracy`, as the hypernetwork method does (bench/results/cl_wsn.md compares them).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.classify.continual import ContinualDigits
from netlab.nn import wsn
from netlab.registry import check_range


class WSNContinualDigits(ContinualDigits):
    soft = False

    def __init__(self, config, policy=None):
        self._setup_tasks(config)
        m = config.model
        self.capacity = check_range("model.capacity", float(m.capacity), 0.01, 1.0)
        self.sizes = (64, *tuple(m.hidden), self.classes)
        self._eval = jax.jit(self._logits)

    def wrap_optimizer(self, tx):
        """The trainer's optimizer, then the freezing of used weights and finished scores."""
        freeze = wsn.freeze_finished_tasks(self.num_tasks, self.steps_per_task, self.capacity)
        return optax.chain(tx, freeze)

    def init_variables(self, rng):
        weights, scores = [], []
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            k1, k2 = jax.random.split(jax.random.fold_in(rng, i))
            he = jax.random.normal(k1, (fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
            weights.append({"kernel": he, "bias": jnp.zeros(fan_out)})
            bound = 1.0 / np.sqrt(fan_in)  # kaiming-uniform scores, as the WSN code
            s = jax.random.uniform(
                k2, (self.num_tasks, fan_in, fan_out), minval=-bound, maxval=bound
            )
            scores.append({"kernel": s, "bias": jnp.zeros((self.num_tasks, fan_out))})
        return {"params": {"weights": weights, "scores": scores}}

    def _forward(self, weights, x):
        for i, layer in enumerate(weights):
            x = x @ layer["kernel"] + layer["bias"]
            x = jax.nn.relu(x) if i < len(weights) - 1 else x
        return x

    def _train_weights(self, params, task, rng):
        scores = jax.tree.map(lambda s: s[task], params["scores"])
        if not self.soft:
            return wsn.masked(params["weights"], scores, self.capacity)
        out = []
        for i, (layer, s) in enumerate(zip(params["weights"], scores)):
            key = jax.random.fold_in(rng, i)
            mask = wsn.soft_mask(s["kernel"], self.capacity, key)
            out.append({"kernel": layer["kernel"] * mask, "bias": layer["bias"]})
        return out

    def loss_fn(self, params, model_state, batch, rng, train):
        rng = jax.random.key(0) if rng is None else rng
        weights = self._train_weights(params, batch["task"], rng)
        logits = self._forward(weights, batch["image"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        metrics = {
            "accuracy": (logits.argmax(-1) == batch["label"]).mean(),
            "cross_entropy": ce,
            "task": batch["task"].astype(jnp.float32),
        }
        return ce, (metrics, model_state)

    def _logits(self, params, stored, x, t, use_stored):
        """Task t's logits with its hard mask (`stored`, `use_stored`: the parent's interface)."""
        del stored, use_stored
        scores = jax.tree.map(lambda s: s[t], params["scores"])
        return self._forward(wsn.masked(params["weights"], scores, self.capacity), x)

    def evaluate(self, params, model_state, step, workdir):
        state = {"continual": {"stored": np.zeros(0)}}
        return super().evaluate(params, state, step, workdir)


class SoftNetContinualDigits(WSNContinualDigits):
    soft = True

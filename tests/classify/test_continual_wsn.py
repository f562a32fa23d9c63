"""WSN / SoftNet on split digits (netlab/classify/continual_wsn.py,
configs/classify_continual_digits.py:method=wsn|softnet): trained with the trainer's optimizer
wrapped by `wrap_optimizer`, task 1's predictions after task 2 equal those right after task 1
exactly (forget-free), while task 2 did move the shared weights (SoftNet: the same freezing,
only built here: its soft masks are tests/train/test_wsn.py's)."""

import jax
import numpy as np
import optax

from netlab import configlib
from netlab.classify.continual_wsn import WSNContinualDigits
from netlab.train import optim

OVER = {"data.num_tasks": "2", "train.steps": "6", "train.batch_size": "16"}


def test_task_one_predictions_unchanged_after_task_two():
    soft = configlib.import_task(
        configlib.load("configs/classify_continual_digits.py:method=softnet", None, OVER)
    )
    assert isinstance(soft, WSNContinualDigits) and soft.soft  # same freezing, soft masks
    cfg = configlib.load("configs/classify_continual_digits.py:method=wsn", None, OVER)
    task = configlib.import_task(cfg)
    assert isinstance(task, WSNContinualDigits) and not task.soft
    tx = task.wrap_optimizer(optim.build(cfg.optimizer, 6))
    params = task.init_variables(jax.random.key(0))["params"]
    state = tx.init(params)

    @jax.jit
    def step(params, state, batch, rng):
        grads = jax.grad(lambda p: task.loss_fn(p, {}, batch, rng, True)[0])(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    x = task.data["test_x"].reshape(len(task.data["test_x"]), -1)
    snapshots = []
    for s in range(6):
        params, state = step(params, state, task.train_batch(s), jax.random.key(s))
        if s in (2, 5):  # the ends of task 1 and task 2
            snapshots.append((params, np.asarray(task._eval(params, None, x, 0, True))))
    (p1, after1), (p2, after2) = snapshots
    np.testing.assert_array_equal(after2, after1)
    assert np.ptp(after1) > 0
    moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2))]
    assert max(moved) > 0  # task 2 trained the free weights and its own scores

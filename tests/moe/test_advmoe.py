"""AdvMoE (netlab/moe/advmoe.py) on a tiny CondConv MoE of the digits task: PGD stays in the
eps-ball and the data range and raises the attacked loss; a router phase moves only router
parameters and a backbone phase only the others (AdamW with decay, exact zeros elsewhere); bad
attack settings are one-line UserErrors when the task is built; the trainer path alternates."""

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.errors import UserError
from netlab.moe import advmoe
from netlab.moe.task import MoEDigits
from tests.conftest import ROOT

CONV = str(ROOT / "configs" / "moe" / "conv_moe_digits.py") + ":model=condconv"


def _task(**adv):
    cfg = configlib.load(
        CONV, overrides={"model.channels": (4,), "model.num_experts": 2, "train.batch_size": 8}
    )
    with cfg.unlocked():
        cfg.adv_moe = ml_collections.ConfigDict(
            dict(dict(enabled=True, eps=0.1, step_size=0.05), **adv)
        )
    return MoEDigits(cfg)


def test_bad_attack_settings_are_one_line_errors():
    for key, value in (("eps", 0.0), ("eps", -1.0), ("steps", 0), ("steps", 1.5)):
        with pytest.raises(UserError, match=f"adv_moe.{key}=") as e:
            _task(**{key: value})
        assert "\n" not in str(e.value)


def test_pgd_and_phases_move_only_their_part():
    task = _task(steps=3)
    c = task.adv
    variables = nn.unbox(task.init_variables(jax.random.key(0)))
    params, model_state = variables.pop("params"), variables
    batch = task.train_batch(0)
    x, y = batch["image"], batch["label"]
    forward = task.adv_forward(model_state)
    labels = advmoe.labels(params)
    assert {advmoe.ROUTER, advmoe.BACKBONE} == set(jax.tree.leaves(labels))

    tx = optax.adamw(1e-2, weight_decay=0.5)
    txs = {p: advmoe.phase_optimizer(tx, p) for p in advmoe.PHASES}
    states = advmoe.init(params, txs)

    def trainer_grads(phase):  # the trainer path: loss_fn masks by the batch's phase
        loss = lambda p: task.loss_fn(p, model_state, dict(batch, phase=phase), key, True)[0]  # noqa: E731
        return jax.grad(loss)(params)

    @jax.jit
    def everything(params, key):  # one compiled program for every check below
        clean = forward(params, x, key)[0]
        objective = lambda z: advmoe.kl(clean, forward(params, z, key)[0])  # noqa: E731
        x_adv = advmoe.pgd(objective, x, key, c)
        start = advmoe.pgd(objective, x, key, advmoe.AdvConfig(**{**vars(c), "steps": 0}))
        moved = {
            p: advmoe.phase_step(forward, params, states[p], x, y, key, c, txs[p])[0]
            for p in advmoe.PHASES
        }
        grads = jax.vmap(trainer_grads)(np.arange(2, dtype=np.int32))
        return x_adv, objective(x_adv), objective(start), objective(x), moved, grads

    key = jax.random.key(1)
    x_adv, attacked, random_start, clean, moved, grads = jax.device_get(everything(params, key))
    assert np.abs(x_adv - x).max() <= c.eps + 1e-6 and np.abs(x_adv - x).max() > c.eps / 2
    assert x_adv.min() >= c.lo and x_adv.max() <= c.hi
    assert attacked > random_start > abs(clean) and abs(clean) < 1e-7  # ascent on KL(f(x)||f(x'))

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for i, phase in enumerate(advmoe.PHASES):
        for (path, a), b, g, label in zip(
            flat,
            jax.tree.leaves(moved[phase]),
            jax.tree.leaves(grads),
            jax.tree.leaves(labels),
            strict=True,
        ):
            where = (phase, jax.tree_util.keystr(path))
            assert (not np.array_equal(a, b)) == (label == phase), where
            assert bool(np.any(g[i] != 0)) == (label == phase), where

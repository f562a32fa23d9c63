"""DP-SGD in the trainer (`optimizer.dp_clip_norm`, netlab/train/dpsgd.py) on the digits
classifier: with noise 0 and a huge clip norm the private gradient is the ordinary one; each
example's clipped contribution has norm C when its gradient is larger; what cannot be private is
refused in one line; the budget line matches the accountant."""

import jax
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.train import dpsgd, tan
from netlab.train.trainer import Trainer
from tests.train.helpers import tiny_config

B = 8


def _trainer(**overrides):
    config = tiny_config(**{"train.batch_size": str(B), **overrides})
    return Trainer(config, devices=jax.devices()[:1])


def _norm(tree):
    return float(
        np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree)))
    )


def test_private_gradient_equals_ordinary_and_clips_each_example(capsys):
    plain = _trainer()
    dp = _trainer(**{"optimizer.dp_clip_norm": "1e6", "optimizer.dp_noise": "0"})
    assert "no privacy" in capsys.readouterr().out
    params = plain.init_state().params
    batch = jax.tree.map(np.asarray, plain.task.train_batch(0))
    rng = jax.random.key(0)
    clip = 0.05
    tight = dpsgd.PrivateGradient(clip, 0.0)

    @jax.jit
    def grads(params):
        ordinary = plain._loss_and_grad(params, {}, batch, rng)
        private = dp._loss_and_grad(params, {}, batch, rng)
        # each example alone (its own batch of one): its clipped contribution
        one = jax.vmap(
            lambda ex: tight(
                plain.task.loss_fn, params, {}, jax.tree.map(lambda a: a[None], ex), rng
            )[3]
        )(batch)
        return ordinary, private, one

    ordinary, private, one = grads(params)
    np.testing.assert_allclose(private[0], ordinary[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(private[3]), jax.tree.leaves(ordinary[3])):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    assert float(private[1]["dp_clipped_fraction"]) == 0
    for i in range(B):
        mine = jax.tree.map(lambda a, i=i: a[i], one)
        # = C: clipped (an example with a gradient under C would keep its smaller norm)
        np.testing.assert_allclose(_norm(mine), clip, rtol=1e-4)


def test_refusals_are_one_line_and_the_budget_matches_the_accountant(capsys):
    with pytest.raises(UserError, match=r"optimizer.dp_clip_norm=1: .*train.grad_accum") as e:
        _trainer(
            **{"optimizer.dp_clip_norm": "1.0", "train.grad_accum": "2", "train.batch_size": "16"}
        )
    assert "\n" not in str(e.value)
    _trainer(**{"optimizer.dp_clip_norm": "1.0", "optimizer.dp_noise": "1.1", "train.steps": "100"})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    eps, _ = tan.epsilon(B / 1437, 1.1, 100, 1e-5)
    assert f"eps={eps:.3g}" in line and "N=1437" in line, line

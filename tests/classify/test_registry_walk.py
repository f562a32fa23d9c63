"""Every classifier trunk (`model.trunk`), built from configs/classify_digits.py: abstract init and
one traced gradient of the task loss (jax.eval_shape, nothing compiled). The covered names must
equal the registry's, so a new trunk without a case here fails."""

import jax
import pytest

from netlab import configlib
from netlab.classify.registries import TRUNKS
from netlab.classify.task import DigitsClassification
from netlab.errors import UserError

CONFIG = "configs/classify_digits.py:cpu"
TINY = {"model.width": "8", "model.depth": "2", "model.hidden": "16", "train.batch_size": "8"}
CASES = {
    "convnet": {"model.channels": "(4, 8)"},
    "revnet": {},
    "revcol": {"model.levels": "3"},
    "irevnet": {},
    "hypernet": {},
    "mixture": {},
    "hopfield": {},
}


def _task(name, **extra):
    overrides = {"model.trunk": name, **TINY, **CASES.get(name, {}), **extra}
    return DigitsClassification(configlib.load(CONFIG, overrides=overrides))


def test_cases_cover_the_registry():
    covered = {CASES[c].get("model.trunk", c) for c in CASES}
    assert covered == set(TRUNKS.names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_trunk_traces_a_gradient(name):
    task = _task(name)
    variables = jax.eval_shape(task.init_variables, jax.random.key(0))
    batch = task.train_batch(0)

    def logits_and_grads(params):
        def loss(params):
            return task.loss_fn(params, {}, batch, None, True)[0]

        return task.model.apply({"params": params}, batch["image"]), jax.grad(loss)(params)

    logits, grads = jax.eval_shape(logits_and_grads, variables["params"])
    assert logits.shape == (8, 10)
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])


def test_odd_width_of_a_split_trunk_is_one_line():
    with pytest.raises(UserError, match=r"model.width=7: .*even") as e:
        _task("revnet", **{"model.width": "7"})
    assert "\n" not in str(e.value)

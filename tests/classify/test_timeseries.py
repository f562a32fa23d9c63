"""The time-series toy (netlab/classify/timeseries.py): deterministic batches, one SGD step of
every forecaster lowers the loss, a bad forecaster name is one line."""

import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.classify.registries import FORECASTERS
from netlab.classify.timeseries import TimeSeriesForecasting
from netlab.errors import UserError

CONFIG = "configs/timeseries_toy.py:cpu"
TINY = {"model.hidden": "8", "train.batch_size": "16", "data.length": "400", "data.window": "24"}


def _task(forecaster="mlp", **extra):
    overrides = {"model.forecaster": forecaster, **TINY, **extra}
    return TimeSeriesForecasting(configlib.load(CONFIG, overrides=overrides))


def test_batches_are_deterministic_and_the_naive_forecast_is_the_zero_model():
    a, b = _task(), _task()
    np.testing.assert_array_equal(a.train_batch(3)["window"], b.train_batch(3)["window"])
    np.testing.assert_array_equal(a.train_batch(3)["target"], b.train_batch(3)["target"])
    assert not np.array_equal(a.train_batch(3)["window"], a.train_batch(4)["window"])
    batch = a.train_batch(0)
    assert batch["window"].shape == (16, 24, 4) and batch["target"].shape == (16, 12, 4)
    # the target continues the window: both are slices of one series
    x = a.train_x
    start = int(np.flatnonzero((x[:, 0] == batch["window"][0, 0, 0]))[0])
    np.testing.assert_array_equal(x[start + 24 : start + 36], batch["target"][0])
    shapes = jax.eval_shape(a.init_variables, jax.random.key(0))["params"]
    zero = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    scalars, _ = a.evaluate(zero, {}, 0, "")
    assert scalars["test_mse"] == pytest.approx(scalars["naive_mse"], rel=1e-6)


def test_one_step_lowers_the_loss_and_every_forecaster_traces():
    """One SGD step for mlp, pgn and tpgn; stanhop and stanhop_net (whose compiles alone cost
    ~30 s on CPU) are traced abstractly (shapes of the loss and of its gradient)."""
    assert set(FORECASTERS.names()) == {"mlp", "pgn", "tpgn", "stanhop", "stanhop_net"}
    for name in FORECASTERS.names():
        task = _task(name, **({"model.memory": "tune"} if name == "stanhop_net" else {}))
        batch = jax.tree.map(np.asarray, task.train_batch(0))

        def loss(p, task=task, batch=batch):
            return task.loss_fn(p, {}, batch, None, True)[0]

        def step(p, loss=loss):
            before, grads = jax.value_and_grad(loss)(p)
            return before, loss(jax.tree.map(lambda w, g: w - 1e-2 * g, p, grads))

        if name.startswith("stanhop"):
            params = jax.eval_shape(task.init_variables, jax.random.key(0))["params"]
            before, after = jax.eval_shape(step, params)
            assert before.shape == after.shape == ()
            continue
        params = jax.jit(task.init_variables)(jax.random.key(0))["params"]
        before, after = jax.jit(step)(params)
        assert after < before, name


def test_bad_forecaster_and_window_are_one_line():
    with pytest.raises(UserError, match=r"model.forecaster='pgm'.*did you mean 'pgn'") as e:
        _task("pgm")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"data.window=25 .*data.period=12") as e:
        _task("mlp", **{"data.window": "25"})
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"model.memory='plug'.*none.*tune") as e:
        _task("stanhop_net", **{"model.memory": "plug"})
    assert "\n" not in str(e.value)

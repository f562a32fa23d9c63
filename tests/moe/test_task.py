"""The byte-level MoE LM task through the Task protocol: batches, loss, a few optax steps, the
held-out split, evaluation pictures, and the auxiliary-loss-free bias kept outside the params."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.moe import text
from netlab.moe.task import ByteLM
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs" / "moe" / "lm_tiny.py")
SMALL = {"model.width": 32, "model.depth": 2, "model.num_heads": 2, "model.mlp_hidden": 32,
         "model.moe.hidden": 32, "data.seq_len": 16, "train.batch_size": 8, "data.eval_windows": 8}


@pytest.fixture(scope="module")
def task():
    return ByteLM(configlib.load(CONFIG, "cpu", dict(SMALL, **{"model.moe.bias_update_rate": 0.01})))


def test_text_split_is_held_out_and_batches_are_pure(task):
    train, valid = text.load(0.1)
    assert len(valid) > 40_000 and abs(len(valid) / (len(train) + len(valid)) - 0.1) < 1e-3
    b0 = task.train_batch(3, 0, 1)["tokens"]
    assert b0.shape == (8, 17) and b0.dtype == np.int32
    np.testing.assert_array_equal(b0, task.train_batch(3, 0, 1)["tokens"])
    assert not np.array_equal(b0, task.train_batch(4, 0, 1)["tokens"])
    halves = [task.train_batch(3, i, 2)["tokens"] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), b0)
    assert task.batch_axes() == {"tokens": ("batch", None)} and task.global_batch_size() == 8


@pytest.mark.slow
def test_loss_metrics_and_a_few_optax_steps(task):
    variables = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))
    params = variables.pop("params")
    state = variables
    assert set(state) == {"router_bias"}            # the balancing bias is not a parameter
    assert params["moe_0"]["wi"].shape == (8, 32, 32)
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)
    batch = jax.tree.map(jnp.asarray, task.train_batch(0, 0, 1))

    @jax.jit
    def step(params, opt_state, model_state, rng):
        (loss, (metrics, new_state)), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
            params, model_state, batch, rng, True)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, new_state, loss, metrics

    losses_seen = []
    for i in range(12):
        params, opt_state, new_state, loss, metrics = step(params, opt_state, state, jax.random.key(i))
        if i == 0:
            for name in ("load_balance", "dropped_fraction", "z_loss", "cross_entropy"):
                assert name in metrics and np.isfinite(metrics[name]), name
            assert 0.0 <= float(metrics["dropped_fraction"]) < 1.0 and float(metrics["load_balance"]) >= 0.99
            # DeepSeek-V3 bias update: b moves by +-u towards the under-loaded experts
            b = np.asarray(new_state["router_bias"]["moe_0"]["bias"])
            np.testing.assert_allclose(np.abs(b), 0.01, rtol=1e-6)
        state = new_state
        losses_seen.append(float(loss))
    assert losses_seen[-1] < losses_seen[0] - 0.5

    scalars, images = task.evaluate(params, state, 12, "/tmp")
    assert np.isfinite(scalars["valid_loss"]) and "valid_load_balance" in scalars
    for name in ("expert_load", "token_experts"):
        img = images[name]
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3 and img.std() > 0


@pytest.mark.slow
def test_vit_moe_digits_task_learns_with_expert_choice():
    from netlab.moe.task import ViTMoEDigits

    cfg = configlib.load(str(ROOT / "configs" / "moe" / "vit_moe_digits.py"), "cpu",
                         {"model.width": 16, "model.depth": 2, "model.mlp_hidden": 16, "model.moe.hidden": 16,
                          "model.moe.router": "expert_choice", "train.batch_size": 16})
    task = ViTMoEDigits(cfg)
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
    assert params["moe_1"]["wi"].shape == (8, 16, 16) and "mlp_0" in params
    batch = jax.tree.map(jnp.asarray, task.train_batch(0, 0, 1))
    opt = optax.adam(1e-2)
    grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True), static_argnums=4)
    opt_state = opt.init(params)
    first = None
    for i in range(10):
        (loss, (metrics, _)), grads = grad_fn(params, {}, batch, jax.random.key(i), True)
        first = float(loss) if first is None else first
        updates, opt_state = opt.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
    assert float(metrics["unrouted_fraction"]) < 1.0 and float(metrics["dropped_fraction"]) == 0.0
    assert float(loss) < first - 0.3


def test_expert_params_carry_logical_names_for_resharding(task):
    """Every expert weight is stacked on the logical `expert` axis (so a checkpoint saved with
    expert=4 can be restored with expert=2 by the trainer's target shardings)."""
    boxed = jax.eval_shape(task.init_variables, jax.random.key(0))["params"]
    specs = nn.get_partition_spec(boxed)
    for layer in ("moe_0", "moe_1"):
        assert tuple(specs[layer]["wi"]) == ("expert", "embed_no_exp", "mlp")
        assert tuple(specs[layer]["wo"]) == ("expert", "mlp", "embed_no_exp")
        assert tuple(specs[layer]["router"]) == ("embed", None)
    rules = configlib.load(CONFIG, "cpu").sharding.rules
    mesh_spec = nn.logical_to_mesh_axes(("expert", "embed_no_exp", "mlp"), [tuple(r) for r in rules])
    assert mesh_spec[0] == "expert"

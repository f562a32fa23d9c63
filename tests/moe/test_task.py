"""The MoE tasks through the Task protocol: batches, loss = task loss + the layers' weighted aux
losses, a few optax steps, the held-out split, evaluation pictures, the auxiliary-loss-free bias
kept outside the params, `train.remat` on the MoE blocks, and one-line errors at construction."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.errors import UserError
from netlab.moe import text
from netlab.moe.task import ByteLM, MoEDigits
from netlab.nn import aux
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs" / "moe" / "lm_tiny.py")
SMALL = {
    "model.width": 32,
    "model.depth": 2,
    "model.num_heads": 2,
    "model.mlp_hidden": 32,
    "model.moe.hidden": 32,
    "data.seq_len": 16,
    "train.batch_size": 8,
    "data.eval_windows": 8,
}


@pytest.fixture(scope="module")
def task():
    return ByteLM(
        configlib.load(
            CONFIG,
            "cpu",
            dict(SMALL, **{"model.moe.router": "loss_free", "model.moe.bias_update_rate": 0.01}),
        )
    )


def test_text_split_is_held_out_and_batches_are_pure(task):
    train, valid = text.load(0.1)
    assert len(valid) > 40_000 and abs(len(valid) / (len(train) + len(valid)) - 0.1) < 1e-3
    b0 = task.train_batch(3)["tokens"]
    assert b0.shape == (8, 17) and b0.dtype == np.int32
    np.testing.assert_array_equal(b0, task.train_batch(3)["tokens"])
    assert not np.array_equal(b0, task.train_batch(4)["tokens"])
    assert task.batch_axes() == {"tokens": ("batch", None)} and task.global_batch_size() == 8


def test_loss_is_cross_entropy_plus_coefficient_times_mean_over_moe_layers():
    """Each of the L MoE layers sows coef/L * its loss, so the total is coef * (layer mean), the
    weighting of loss.load_balance and loss.z_loss."""
    cfg = configlib.load(
        CONFIG,
        "cpu",
        dict(
            SMALL, **{"model.moe.backend": "capacity", "loss.load_balance": 0.3, "loss.z_loss": 0.2}
        ),
    )
    t = ByteLM(cfg)
    params = nn.unbox(jax.jit(t.init_variables)(jax.random.key(0)))["params"]
    tokens = jnp.asarray(t.train_batch(0)["tokens"])

    @jax.jit
    def run(params):
        loss, (metrics, _) = t.loss_fn(params, {}, {"tokens": tokens}, jax.random.key(1), True)
        return loss, metrics, t.apply(params, {}, tokens[:, :-1], jax.random.key(1), True)[1]

    loss, metrics, cols = run(params)
    per_layer = np.array(
        [
            [cols[aux.METRICS][b]["mlp"][n] for n in ("load_balance", "z_loss")]
            for b in ("block0", "block1")
        ]
    )  # (layers, 2)
    expect = metrics["cross_entropy"] + 0.3 * per_layer[:, 0].mean() + 0.2 * per_layer[:, 1].mean()
    np.testing.assert_allclose(loss, expect, rtol=1e-6)
    np.testing.assert_allclose(metrics["load_balance"], per_layer[:, 0].mean(), rtol=1e-6)
    assert float(metrics["aux_loss"]) > 0.3 * 0.99


@pytest.mark.slow
def test_loss_metrics_and_a_few_optax_steps(task):
    variables = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))
    params = variables.pop("params")
    state = variables
    assert set(state) == {"router_bias"}  # the balancing bias is not a parameter
    assert params["block0"]["mlp"]["wi"].shape == (8, 32, 32)
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))

    @jax.jit
    def step(params, opt_state, model_state, rng):
        (loss, (metrics, new_state)), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
            params, model_state, batch, rng, True
        )
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, new_state, loss, metrics

    losses_seen = []
    for i in range(12):
        params, opt_state, new_state, loss, metrics = step(
            params, opt_state, state, jax.random.key(i)
        )
        if i == 0:
            for name in ("load_balance", "dropped_fraction", "z_loss", "cross_entropy", "aux_loss"):
                assert name in metrics and np.isfinite(metrics[name]), name
            assert 0.0 <= float(metrics["dropped_fraction"]) < 1.0
            assert float(metrics["load_balance"]) >= 0.99
            # DeepSeek-V3 bias update: b moves by +-u towards the under-loaded experts
            b = np.asarray(new_state["router_bias"]["block0"]["mlp"]["bias"])
            assert np.all(np.isclose(np.abs(b), 0.01) | (b == 0)) and b.min() < 0 < b.max()
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
    cfg = configlib.load(
        str(ROOT / "configs" / "moe" / "vit_moe_digits.py"),
        "cpu",
        {
            "model.width": 16,
            "model.depth": 2,
            "model.mlp_hidden": 16,
            "model.moe.hidden": 16,
            "model.moe.router": "expert_choice",
            "train.batch_size": 16,
        },
    )
    task = MoEDigits(cfg)
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
    assert params["block1"]["mlp"]["wi"].shape == (8, 16, 16)
    assert params["block0"]["mlp"]["wi"].shape == (16, 16)  # a dense block
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))
    opt = optax.adam(1e-2)
    grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True), static_argnums=4)
    opt_state = opt.init(params)

    @jax.jit  # one compile, not one per eager op and leaf shape
    def update(grads, opt_state, params):
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    first = None
    for i in range(10):
        (loss, (metrics, _)), grads = grad_fn(params, {}, batch, jax.random.key(i), True)
        first = float(loss) if first is None else first
        params, opt_state = update(grads, opt_state, params)
    assert float(metrics["unrouted_fraction"]) < 1.0 and float(metrics["dropped_fraction"]) == 0.0
    assert float(loss) < first - 0.3


def test_expert_params_carry_logical_names_for_resharding(task):
    """Every expert weight is stacked on the logical `expert` axis (so a checkpoint saved with
    expert=4 can be restored with expert=2 by the trainer's target shardings)."""
    boxed = jax.eval_shape(task.init_variables, jax.random.key(0))["params"]
    specs = nn.get_partition_spec(boxed)
    for block in ("block0", "block1"):
        assert tuple(specs[block]["mlp"]["wi"]) == ("expert", "embed_no_exp", "mlp")
        assert tuple(specs[block]["mlp"]["wo"]) == ("expert", "mlp", "embed_no_exp")
        assert tuple(specs[block]["mlp"]["router"]) == ("embed", None)
    rules = configlib.load(CONFIG, "cpu").sharding.rules
    mesh_spec = nn.logical_to_mesh_axes(
        ("expert", "embed_no_exp", "mlp"), [tuple(r) for r in rules]
    )
    assert mesh_spec[0] == "expert"


def test_train_remat_reaches_the_moe_blocks():
    """train.remat=full (the pod preset sets it) wraps every MoE-model block in a checkpoint."""
    cfgs = {
        r: configlib.load(CONFIG, "cpu", dict(SMALL, **{"train.remat": r, "model.depth": 1}))
        for r in ("none", "full")
    }
    params = jax.eval_shape(ByteLM(cfgs["none"]).init_variables, jax.random.key(0))["params"]
    params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), nn.unbox(params))
    for remat, cfg in cfgs.items():
        t = ByteLM(cfg)
        batch = jax.tree.map(jnp.asarray, t.train_batch(0))
        fn = jax.grad(lambda p: t.loss_fn(p, {}, batch, jax.random.key(1), True)[0])
        jaxpr = str(jax.make_jaxpr(fn)(params))
        assert ("checkpoint" in jaxpr or "remat" in jaxpr) == (remat == "full"), remat


BAD = [
    ({"model.moe.router": "foo"}, "model.moe.router='foo'"),
    ({"model.moe.router": "expert_choice"}, "leaks future tokens"),
    ({"model.moe.router": "soft"}, "leaks future tokens"),
    ({"model.moe.k": 9}, "model.moe.k=9"),
    ({"model.moe.router": "sparsemixer", "model.moe.k": 3}, "k=1 or k=2"),
    ({"model.moe.backend": "fast"}, "model.moe.backend='fast'"),
    ({"model.moe.num_experts": 6}, "model.moe.num_experts=6 is not divisible"),
    ({"model.moe.activation": "tanh"}, "model.moe.activation='tanh'"),
    ({"model.moe.grouped_matmul": "megablocks"}, "model.moe.grouped_matmul"),
    (
        {"model.moe.router": "loss_free", "model.moe.bias_update_rate": 0.0},
        "model.moe.bias_update_rate",
    ),
    ({"model.name": "vit"}, "model.name='vit' reads images"),
    ({"model.name": "nope"}, "model.name='nope'"),
]


@pytest.mark.parametrize("over,msg", BAD, ids=[m for _, m in BAD])
def test_bad_config_values_fail_at_construction_in_one_line(over, msg):
    cfg = configlib.load(CONFIG, "cpu", over)  # cpu: mesh.expert=4
    with pytest.raises(UserError) as err:
        ByteLM(cfg)
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_bad_capacity_factor_and_router_backend_pairs_fail_at_construction():
    vit = str(ROOT / "configs" / "moe" / "vit_moe_digits.py")
    for over, msg in [
        (
            {"model.moe.router": "soft", "model.moe.backend": "dropless"},
            "router 'soft' works with backend capacity, ep",
        ),
        (
            {"model.moe.router": "smear", "model.moe.backend": "capacity"},
            "router 'smear' works with backend dense",
        ),
        ({"model.moe.capacity_multiple": 0}, "model.moe.capacity_multiple=0"),
        ({"model.patch": 3}, "model.patch=3"),
    ]:
        with pytest.raises(UserError) as err:
            MoEDigits(configlib.load(vit, "cpu", over))
        assert msg in str(err.value) and "\n" not in str(err.value), str(err.value)

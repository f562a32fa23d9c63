"""Dynamic token routing (netlab/diffusion/token_routing.py) against the DiT it gates. One jitted
call: DiT with random weights; the routed model with the same weights and routers whose bias is
+1e4 (every gate open), -1e4 (every gate closed) or 0 (random kernels: mixed), in evaluation and
training; and the straight-through gate on its own (the router's training is the registry walk's
Trainer step, whose loss carries the budget term)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion.dit import DiT
from netlab.diffusion.task import build_backbone
from netlab.diffusion.token_routing import gate, gated_block
from netlab.errors import UserError
from netlab.nn import aux
from netlab.nn.blocks import AdaLNZeroBlock
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, patch=4, width=16, depth=2, num_heads=2, num_classes=3)
BUDGET, WEIGHT = 0.25, 2.0
X = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
T, Y = np.array([-30.0, 0.0, 40.0], np.float32), np.array([0, 1, 3])
ROUTED = DiT(**KW, block_cls=gated_block(BUDGET, WEIGHT))


def _routed(p, train):
    rngs = {"router": jax.random.key(3)} if train else {}
    out, cols = ROUTED.apply(p, X, T, Y, train, rngs=rngs, mutable=aux.COLLECTIONS)
    return out, aux.total_loss(cols), aux.mean_metrics(cols)["routing_compute"]


@jax.jit
def _run(p_dit, p_routed):
    res = {
        "dit": DiT(**KW).apply(p_dit, X, T, Y),
        "dit0": DiT(**{**KW, "depth": 0}).apply(p_dit, X, T, Y),
    }
    res["eval"] = jax.vmap(lambda p: _routed(p, False))(p_routed)  # open, closed, mixed
    res["train"] = jax.vmap(lambda p: _routed(p, True))(p_routed)
    logit = jnp.full((20000,), 0.8)
    res["gate"] = (gate(logit, True, jax.random.key(5)), gate(logit, False))
    res["gate_grad"] = jax.grad(lambda z: jnp.sum(gate(z, True, jax.random.key(5))))(logit)
    return res


@pytest.fixture(scope="module")
def res():
    shapes = nn.unbox(jax.eval_shape(lambda k: ROUTED.init(k, X, T, Y), jax.random.key(0)))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    p_dit = jax.tree.map(lambda v: v, params)  # a copy without the routers
    for name, block in p_dit["params"].items():
        if name.startswith("block"):
            block.pop("router"), block.pop("router_c")

    def variant(bias):
        def f(path, v):
            name = jax.tree_util.keystr(path)
            return np.full_like(v, bias) if "router" in name and "bias" in name else v

        return jax.tree_util.tree_map_with_path(f, params)

    stacked = jax.tree.map(lambda *a: np.stack(a), variant(1e4), variant(-1e4), variant(0.0))
    return jax.device_get(_run(p_dit, stacked))


def test_full_budget_and_open_gates_are_the_dense_dit(res):
    assert gated_block(1.0) is AdaLNZeroBlock  # budget 1: no gate at all
    for mode in ("eval", "train"):  # every gate open: the gated sum is exactly the block output
        out, loss, used = (a[0] for a in res[mode])
        np.testing.assert_array_equal(out, res["dit"], err_msg=mode)
        assert used == 1.0
    depth = KW["depth"]  # one budget term per block
    assert res["train"][1][0] == pytest.approx(depth * WEIGHT * (1 - BUDGET) ** 2)
    assert res["eval"][1][0] == 0.0  # no budget loss at evaluation


def test_closed_gates_skip_every_block_and_mixed_gates_are_in_between(res):
    for mode in ("eval", "train"):
        out, loss, used = (a[1] for a in res[mode])
        np.testing.assert_allclose(out, res["dit0"], rtol=1e-6, atol=1e-6, err_msg=mode)
        assert used == 0.0
    assert res["train"][1][1] == pytest.approx(KW["depth"] * WEIGHT * BUDGET**2)
    out, _, used = (a[2] for a in res["eval"])
    assert 0.0 < used < 1.0
    assert np.abs(out - res["dit"]).max() > 1e-3 and np.abs(out - res["dit0"]).max() > 1e-3


def test_straight_through_gate_is_bernoulli_with_the_soft_gradient(res):
    hard, evaluated = res["gate"]
    assert set(np.unique(hard)) == {0.0, 1.0} and np.all(evaluated == 1.0)
    assert abs(hard.mean() - 1 / (1 + np.exp(-0.8))) < 0.015  # P(logit + L > 0) = sigmoid
    assert np.all(res["gate_grad"] > 0)  # the soft gate's derivative


def test_config_builds_the_routed_dit_and_refuses_bad_budgets():
    cfg = configlib.load("configs/diffusion/digits_rin.py:backbone=dit,routing=dynamic")
    model = build_backbone(cfg.model, (8, 8, 1), 10, Policy())
    assert isinstance(model, DiT) and model.block_cls(16, 2, None).budget == 0.7
    with cfg.unlocked():
        cfg.model.routing_budget = 0.0
    with pytest.raises(UserError, match="model.routing_budget"):
        build_backbone(cfg.model, (8, 8, 1), 10, Policy())

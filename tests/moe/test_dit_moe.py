"""DiT-MoE = the diffusion pillar's DiT with the MoE pillar's `dit_moe` MLP: an adaLN-Zero block
that starts as the identity, shared SwiGLU experts, un-renormalised top-2 gates, the balance loss
sown per layer; the digits config trains through the diffusion task and keeps the DiT interface."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.moe import losses
from netlab.moe.dit_moe_mlp import DiTMoEMLP
from netlab.nn import aux
from netlab.nn.blocks import AdaLNZeroBlock
from netlab.nn.registries import MLPS
from tests.conftest import ROOT


def test_dit_moe_block_identity_at_init_then_moe_with_shared_experts():
    assert MLPS.get("dit_moe") is DiTMoEMLP
    block = AdaLNZeroBlock(16, 2, lambda name: DiTMoEMLP(num_experts=4, hidden=8, name=name))
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    c = jax.random.normal(jax.random.key(1), (2, 16))
    params = nn.unbox(jax.jit(block.init)(jax.random.key(2), x, c))["params"]
    apply = jax.jit(
        lambda p, x, c: block.apply(
            {"params": p}, x, c, True, mutable=["intermediates", *aux.COLLECTIONS]
        )
    )
    y, cols = apply(params, x, c)
    np.testing.assert_allclose(y, x, atol=1e-6)  # adaLN-Zero: the block starts as identity
    mlp = params["mlp"]
    assert mlp["shared"]["wi"].shape == (16, 16) and mlp["shared"]["wg"].shape == (16, 16)
    assert mlp["routed"]["wg"].shape == (4, 16, 8)  # SwiGLU experts, 2 shared of width 8
    gates = np.asarray(cols["intermediates"]["mlp"]["routed"]["gates"][0])  # (G, S, E)
    assert ((gates > 0).sum(-1) == 2).all()  # top-2
    assert (gates.sum(-1) < 1.0 - 1e-3).all()  # softmax weights, not renormalised
    lb = float(cols[aux.METRICS]["mlp"]["routed"]["load_balance"])
    assert lb >= 0.99 and set(aux.loss_terms(cols)) == {"load_balance"}  # no z-loss
    np.testing.assert_allclose(aux.total_loss(cols), 0.01 * lb, rtol=1e-6)  # alpha per layer
    params["adaLN"] = dict(params["adaLN"], bias=params["adaLN"]["bias"] + 0.5)
    y2, _ = apply(params, x, c)
    assert float(jnp.abs(y2 - x).max()) > 1e-2  # the MoE branch now contributes


def test_dit_moe_balance_loss_is_the_k_normalised_switch_loss():
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (2, 5, 4)), -1)
    index = jax.lax.top_k(probs, 2)[1]
    ce = np.bincount(np.asarray(index).reshape(-1), minlength=4) / index.size
    expect = np.sum(np.asarray(probs).reshape(-1, 4).mean(0) * 4 * ce)  # sum_e P_e (E ce_e)
    np.testing.assert_allclose(losses.dit_moe_balance(probs, index), expect, rtol=1e-6)


TINY = {
    "model.width": 8,
    "model.depth": 2,
    "model.num_heads": 2,
    "model.mlp_kwargs.hidden": 8,
    "model.mlp_kwargs.num_experts": 4,
    "train.batch_size": 8,
    "diffusion.sample_steps": 2,
}


def _adam_update(opt):
    def update(grads, opt_state, params):
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    return update


@pytest.fixture(scope="module")
def tiny():
    """The digits DiT-MoE config at TINY size, its task and initial parameters (built once)."""
    from netlab.train.trainer import build_task

    cfg = configlib.load(str(ROOT / "configs" / "moe" / "dit_moe_digits.py"), "cpu", TINY)
    task = build_task(cfg)
    return cfg, task, nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]


def test_dit_moe_digits_defaults_are_the_reference_and_alpha_weights_the_sum_over_layers(tiny):
    """feizc/DiT-MoE: MoE in every block, no token dropped, alpha = 0.01 on the SUM of the layers'
    balance losses (the config used to give each layer 0.01 / number of MoE layers)."""
    path = str(ROOT / "configs" / "moe" / "dit_moe_digits.py")
    for preset in ("cpu", "gpu", "pod"):
        m = configlib.load(path, preset).model
        assert m.mlp_every == 1 and m.mlp_kwargs.load_balance_weight == 0.01, preset
        assert m.mlp_kwargs.capacity_factor <= 0 and m.mlp_kwargs.eval_capacity_factor <= 0
    _, task, params = tiny
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    _, cols = jax.jit(
        lambda p: task.model.apply(
            {"params": p}, x, jnp.full(4, 0.5), jnp.arange(4), True, mutable=aux.COLLECTIONS
        )
    )(params)
    per_layer = [
        float(cols[aux.METRICS][f"block{i}"]["mlp"]["routed"]["load_balance"]) for i in range(2)
    ]  # the unweighted balance loss of each of the 2 MoE layers (1 / 2 each would give half)
    assert all(lb >= 0.99 for lb in per_layer)
    np.testing.assert_allclose(aux.total_loss(cols), 0.01 * sum(per_layer), rtol=1e-6)
    assert float(aux.mean_metrics(cols)["dropped_fraction"]) == 0.0


@pytest.mark.slow
def test_dit_moe_digits_config_trains_through_the_diffusion_task(tiny):
    cfg, task, params = tiny
    for i in range(2):  # an MoE MLP in every block
        assert params[f"block{i}"]["mlp"]["routed"]["wi"].shape == (4, 8, 8)
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))
    grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True), static_argnums=4)
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)
    update = jax.jit(_adam_update(opt))  # one compile, not one per eager op and leaf shape
    losses_seen = []
    for i in range(4):
        (loss, (metrics, _)), grads = grad_fn(params, {}, batch, jax.random.key(0), True)
        losses_seen.append(float(loss))
        params, opt_state = update(grads, opt_state, params)
    assert {"aux/load_balance", "aux/dropped_fraction", "x0_mse"} <= set(metrics), set(metrics)
    # two MoE layers: the weight times the sum of their balance losses (each >= 1)
    w = cfg.model.mlp_kwargs.load_balance_weight
    assert 2 * 0.99 * w < float(metrics["aux/load_balance"]) < 10 * w
    assert float(jnp.abs(grads["block1"]["mlp"]["routed"]["router"]).max()) > 0
    assert float(jnp.abs(grads["block1"]["adaLN"]["kernel"]).max()) > 0
    assert losses_seen[-1] < losses_seen[0]
    # the sampling model (eval capacity, no aux collections) has the DiT interface
    out = jax.jit(task.model.apply)({"params": params}, batch["x"][:4], jnp.zeros(4), jnp.arange(4))
    assert out.shape == (4, 8, 8, 1) and np.isfinite(np.asarray(out)).all()

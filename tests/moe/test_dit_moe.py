"""DiT-MoE: adaLN-Zero identity block with shared SwiGLU experts and un-renormalised top-2 gates;
the digits task trains through the diffusion loss + balance loss and keeps the DiT interface."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.moe.dit_moe import DiTMoEBlock
from tests.conftest import ROOT


@pytest.mark.slow
def test_dit_moe_block_identity_at_init_then_moe_with_shared_experts():
    block = DiTMoEBlock(width=16, num_heads=2, num_experts=4, hidden=8, num_shared=2)
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    c = jax.random.normal(jax.random.key(1), (2, 16))
    params = nn.unbox(jax.jit(block.init)(jax.random.key(2), x, c))["params"]
    apply = jax.jit(lambda p, x, c: block.apply({"params": p}, x, c, mutable=["intermediates"]))
    (y, aux), inter = apply(params, x, c)
    np.testing.assert_allclose(y, x, atol=1e-6)                    # adaLN-Zero: the block starts as identity
    assert params["moe"]["shared_wi"].shape == (16, 16) and params["moe"]["wg"].shape == (4, 16, 8)
    gates = np.asarray(inter["intermediates"]["moe"]["gates"][0])  # (G, S, E)
    assert ((gates > 0).sum(-1) == 2).all()                        # top-2
    assert (gates.sum(-1) < 1.0 - 1e-3).all()                      # softmax weights, not renormalised
    assert 0.99 <= float(aux["load_balance"]) and "dropped_fraction" in aux
    params["adaLN"] = dict(params["adaLN"], bias=params["adaLN"]["bias"] + 0.5)
    (y2, _), _ = apply(params, x, c)
    assert float(jnp.abs(y2 - x).max()) > 1e-2                     # the MoE branch now contributes


@pytest.mark.slow
def test_dit_moe_digits_task_trains_and_samples():
    from netlab.moe.dit_task import DiTMoEDigits

    cfg = configlib.load(str(ROOT / "configs" / "moe" / "dit_moe_digits.py"), "cpu",
                         {"model.width": 16, "model.depth": 2, "model.num_heads": 2, "model.moe.hidden": 16,
                          "train.batch_size": 16, "diffusion.sample_steps": 2})
    task = DiTMoEDigits(cfg)
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
    assert params["block1"]["moe"]["wi"].shape == (8, 16, 16) and "mlp" in params["block0"]
    batch = jax.tree.map(jnp.asarray, task.train_batch(0, 0, 1))
    grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True), static_argnums=4)
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)
    losses = []
    for i in range(5):
        (loss, (metrics, _)), grads = grad_fn(params, {}, batch, jax.random.key(0), True)
        losses.append(float(loss))
        updates, opt_state = opt.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
    assert {"load_balance", "dropped_fraction", "x0_mse"} <= set(metrics)
    assert float(jnp.abs(grads["block1"]["moe"]["router"]).max()) > 0
    assert float(jnp.abs(grads["block1"]["adaLN"]["kernel"]).max()) > 0
    assert losses[-1] < losses[0]
    # the sampling model (eval capacity, no aux returned) has the DiT interface the samplers call
    out = jax.jit(task.model.apply)({"params": params}, batch["x"][:4], jnp.zeros(4), jnp.arange(4))
    assert out.shape == (4, 8, 8, 1) and np.isfinite(np.asarray(out)).all()

"""DiT-MoE block: adaLN-Zero identity at init, shared SwiGLU experts, un-renormalised top-2 gates."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.moe.dit_moe import DiTMoEBlock


@pytest.mark.slow
def test_dit_moe_block_identity_at_init_then_moe_with_shared_experts():
    block = DiTMoEBlock(num_heads=2, num_experts=4, hidden=8, num_shared=2)
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    c = jax.random.normal(jax.random.key(1), (2, 12))
    params = nn.unbox(jax.jit(block.init)(jax.random.key(2), x, c))["params"]
    apply = jax.jit(lambda p, x, c: block.apply({"params": p}, x, c, capture_intermediates=False,
                                                  mutable=["intermediates"]))
    (y, aux), inter = apply(params, x, c)
    np.testing.assert_allclose(y, x, atol=1e-6)                    # adaLN-Zero: the block starts as identity
    assert params["moe"]["shared_wi"].shape == (16, 16) and params["moe"]["wg"].shape == (4, 16, 8)
    gates = np.asarray(inter["intermediates"]["moe"]["gates"][0])  # (G, S, E)
    assert ((gates > 0).sum(-1) == 2).all()                        # top-2
    assert (gates.sum(-1) < 1.0 - 1e-3).all()                      # softmax weights, not renormalised
    assert 0.99 <= float(aux["load_balance"]) and "dropped_fraction" in aux
    # with non-zero modulation the MoE branch contributes and gradients reach adaLN
    params = dict(params, adaln_bias=params["adaln_bias"] + 0.5)
    (y2, _), _ = apply(params, x, c)
    assert float(jnp.abs(y2 - x).max()) > 1e-2
    g = jax.jit(jax.grad(lambda p: jnp.sum(block.apply({"params": p}, x, c)[0] ** 2)))(params)
    assert float(jnp.abs(g["adaln"]).max()) > 0 and float(jnp.abs(g["moe"]["wi"]).max()) > 0

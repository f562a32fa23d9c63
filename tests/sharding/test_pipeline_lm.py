"""The transformer LM (netlab/moe/lm.py) with `pipeline_microbatches` on a 4-stage mesh has the loss
and gradients of the plain LM with the same weights (block i = slice i of the stacked ones)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from netlab.moe.lm import MoELM
from netlab.sharding import mesh as meshlib
from netlab.sharding import pipeline as pl

RULES = (("layers", "stage"),) + common.DEFAULT_RULES
DEPTH = 4


def stack_blocks(tree):
    """Plain params/grads -> the stacked layout (`blocks/layers`, leading layer axis)."""
    blocks = [tree[f"block{i}"] for i in range(DEPTH)]
    rest = {n: v for n, v in tree.items() if not n.startswith("block")}
    return dict(rest, blocks=dict(layers=jax.tree.map(lambda *a: jnp.stack(a), *blocks)))


def test_pipelined_lm_equals_plain_lm():
    kw = dict(vocab=16, max_len=4, width=8, depth=DEPTH, num_heads=2, mlp_hidden=16, moe_every=8)
    tokens = jnp.arange(32).reshape(8, 4) % 16
    with jax.enable_x64(True):  # float64: the pipelined sums run in another order
        plain = MoELM(**kw, dtype=jnp.float64)
        piped = MoELM(**kw, dtype=jnp.float64, pipeline_microbatches=4)
        piped.check()
        shapes = nn.unbox(jax.eval_shape(plain.init, jax.random.key(0), tokens)["params"])
        rng = np.random.default_rng(0)
        params = jax.tree.map(lambda a: 0.3 * rng.standard_normal(a.shape), shapes)

        def loss(model, p):
            logp = jax.nn.log_softmax(model.apply({"params": p}, tokens))
            return -jnp.mean(jnp.take_along_axis(logp, tokens[..., None], -1))

        @jax.jit
        def both(p):
            l0, g0 = jax.value_and_grad(lambda p: loss(plain, p))(p)
            l1, g1 = jax.value_and_grad(lambda q: loss(piped, q))(stack_blocks(p))
            return l0, stack_blocks(g0), l1, g1

        mesh = meshlib.make_mesh(dict(stage=4, data=2))
        assert pl.num_stages(mesh) == 4
        with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
            l0, g0, l1, g1 = both(params)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    assert jax.tree.structure(g1) == jax.tree.structure(g0)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):  # rtol 1e-5 of each leaf's scale
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == np.float64 and np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_trainer_takes_microbatches_from_grad_accum_and_refuses_unpipelined_models():
    from netlab import configlib
    from netlab.errors import UserError
    from netlab.train.trainer import Trainer

    small = {
        "model.depth": "4",
        "model.width": "16",
        "model.num_heads": "2",
        "train.batch_size": "8",
    }
    over = dict(small, **{"model.pipeline_microbatches": "0", "train.grad_accum": "4"})
    cfg = configlib.load("configs/diffusion/digits_dit.py:pipeline", overrides=over)
    trainer = Trainer(cfg)
    assert trainer.mesh.shape["stage"] == 4 and cfg.train.grad_accum == 1
    assert trainer.task.model.pipeline_microbatches == 4
    blocks = trainer.abstract_state.params["blocks"]["layers"]
    assert all(a.sharding.spec[0] == "stage" for a in jax.tree.leaves(blocks))  # default rules
    with pytest.raises(UserError, match="mesh.stage=4 needs a pipelined model"):
        Trainer(
            configlib.load(
                "configs/diffusion/digits_dit.py:pipeline",
                overrides=dict(small, **{"model.pipeline_microbatches": "0"}),
            )
        )

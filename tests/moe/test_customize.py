"""GE/LE/GN customisation (netlab/moe/customize.py): the output is the gate-weighted mixture of the
two experts' class probabilities, the gate's limits give either expert alone, and the frozen
global expert loads from an .npz or a checkpoint. That a Trainer step leaves the global expert
bit-identical (AdamW-style decay included) is checked by its case in test_registry_walk.py."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from netlab.checkpoint.manager import write_params
from netlab.errors import UserError
from netlab.moe import customize

TINY_GE = {"channels": (4,), "num_experts": 2}  # a CondConv net as the global expert


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mlp(p, x):
    h = np.maximum(x.reshape(len(x), -1) @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0)
    return h @ p["out"]["kernel"] + p["out"]["bias"]


def test_mixture_limits_and_loading(tmp_path):
    model = customize.CustomizedMoE(
        global_model="condconv", global_fields=TINY_GE, local_hidden=8, gate_hidden=4
    )
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1))
    variables = nn.unbox(jax.jit(model.init, static_argnums=2)(jax.random.key(0), x, True))
    frozen = jax.device_get(variables[customize.FROZEN]["global_expert"])
    p = jax.device_get(variables["params"])
    ge_logits = np.asarray(model.global_expert().apply({"params": frozen}, x))
    xn = np.asarray(x)

    @functools.partial(jax.jit, static_argnums=1)
    def run(gates, train):  # gates: (3, ...) stacked gate params, one output per row
        f = lambda g: model.apply({**variables, "params": {**p, "gate": g}}, x, train)  # noqa: E731
        return jax.vmap(f)(gates)

    def gate_bias(b):  # z(x) = b for every input
        out = {"kernel": 0 * p["gate"]["out"]["kernel"], "bias": np.full((1,), b, np.float32)}
        return {"hidden": p["gate"]["hidden"], "out": out}

    gates = jax.tree.map(lambda *a: np.stack(a), p["gate"], gate_bias(100.0), gate_bias(-100.0))
    soft, ge_only, le_only = np.asarray(run(gates, True))
    g = 1 / (1 + np.exp(-_mlp(p["gate"], xn)[:, 0]))
    le_logits = _mlp(p["local"], xn)
    want = g[:, None] * _softmax(ge_logits) + (1 - g[:, None]) * _softmax(le_logits)
    np.testing.assert_allclose(np.exp(soft), want, rtol=1e-5, atol=1e-7)
    log_ge, log_le = np.log(_softmax(ge_logits)), np.log(_softmax(le_logits))
    np.testing.assert_allclose(ge_only, log_ge, atol=1e-5)
    np.testing.assert_allclose(le_only, log_le, atol=1e-5)
    # evaluation: the paper's hard switch picks one expert by the sign of z
    gates = jax.tree.map(lambda *a: np.stack(a), gate_bias(0.1), gate_bias(-0.1), p["gate"])
    hard_ge, hard_le, hard = np.asarray(run(gates, False))
    np.testing.assert_allclose(hard_ge, log_ge, atol=1e-5)
    np.testing.assert_allclose(hard_le, log_le, atol=1e-5)
    np.testing.assert_allclose(hard, np.where((g > 0.5)[:, None], log_ge, log_le), atol=1e-5)

    # the frozen expert comes from an .npz or a params-only checkpoint, checked against its shapes
    saved = jax.tree.map(lambda a: np.asarray(a) + 1.0, frozen)
    npz = customize.save_params(str(tmp_path / "ge.npz"), saved)
    ckpt = write_params(str(tmp_path / "run" / "ckpt"), saved, {})
    for path in (npz, str(tmp_path / "run"), ckpt):
        loaded = customize.load_params(path, frozen)
        for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(saved), strict=True):
            np.testing.assert_array_equal(a, b)
    with_path = model.clone(global_path=npz)
    with_path.check((8, 8, 1))
    init = jax.eval_shape(functools.partial(with_path.init, train=True), jax.random.key(0), x)
    init = nn.unbox(init[customize.FROZEN]["global_expert"])
    assert jax.tree.structure(init) == jax.tree.structure(saved)
    with pytest.raises(UserError, match="model.global_path=.*do not fit"):
        model.clone(global_path=npz, global_fields=dict(TINY_GE, channels=(8,))).check((8, 8, 1))
    with pytest.raises(UserError, match="model.global_path=.*does not exist"):
        model.clone(global_path=str(tmp_path / "nothing")).check((8, 8, 1))

"""Explicit expert parallelism (shard_map + all_to_all) on (data, expert) meshes of 8 fake CPU
devices
equals the single-device result; the global load-balance loss equals numpy on the whole batch; the
compiled step has an all-to-all and no all-gather of expert weights; expert weights are sharded."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.errors import UserError
from netlab.moe import losses
from netlab.moe.layer import MoEMLP
from netlab.nn import aux
from netlab.sharding import mesh as meshlib

G, S, D, F, E, K = 8, 8, 16, 32, 8, 2
MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]
RULES = (
    ("expert_group", ("data", "fsdp")),
    ("batch", ("data", "fsdp", "expert")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("expert", "expert"),
    ("embed_no_exp", "fsdp"),
    ("norm", None),
)

MODEL = MoEMLP(
    num_experts=E,
    hidden=F,
    k=K,
    backend="ep",
    capacity_factor=1.0,
    eval_capacity_factor=1.0,
    bpr=True,
)
MODELS = {"ep": MODEL, "capacity": MODEL.clone(backend="capacity")}


def make_mesh(data, expert):
    return meshlib.make_mesh(
        ml_collections.ConfigDict(dict(data=data, fsdp=1, expert=expert, tensor=1))
    )


def make_step(model):
    def loss(params, x, ct):
        y, cols = model.apply({"params": params}, x, True, mutable=aux.COLLECTIONS)
        return jnp.sum(y * ct) + aux.total_loss(cols), (y, aux.mean_metrics(cols))

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


STEPS = {name: make_step(m) for name, m in MODELS.items()}


def numpy_load_balance(params, x):
    logits = np.einsum(
        "gsd,de->gse", np.asarray(x, np.float64), np.asarray(params["router"], np.float64)
    )
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, -1)[..., :K].reshape(-1)
    f = np.bincount(top, minlength=E) / (G * S * K)
    return E * np.sum(f * probs.reshape(-1, E).mean(0))


@pytest.fixture(scope="module")
def setup():
    x = jax.random.normal(jax.random.key(0), (G, S, D))
    ct = jax.random.normal(jax.random.key(1), (G, S, D))
    params = nn.unbox(jax.jit(MODEL.init)(jax.random.key(2), x)["params"])
    params = dict(params, router=params["router"] * 30.0)  # imbalanced enough to drop tokens
    (val, (y, metrics)), grads = STEPS["ep"](params, x, ct)  # no mesh: ep runs as capacity
    return x, ct, params, (val, y, metrics, grads)


@pytest.mark.parametrize("backend", ["ep", "capacity"])
@pytest.mark.parametrize("data,expert", MESHES)
def test_ep_mesh_equals_single_device(setup, data, expert, backend):
    """Both expert-parallel paths: explicit shard_map (ep) and compiler-inserted (capacity)."""
    step = STEPS[backend]
    x, ct, params, (val0, y0, m0, grads0) = setup
    assert 0.0 < float(m0["dropped_fraction"]) < 0.5  # capacity 1.0 with a sharp router drops some
    mesh = make_mesh(data, expert)
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        abstract = jax.eval_shape(MODEL.init, jax.random.key(2), x)
        shardings = meshlib.state_shardings(abstract["params"], mesh, RULES, 1 << 40)
        p = jax.device_put(params, shardings)
        xs = jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp", "expert"))))
        (val, (y, metrics)), grads = step(p, xs, ct)
        if expert > 1:
            assert p["wi"].sharding.spec[0] == "expert" and p["wo"].sharding.spec[0] == "expert"
            assert grads["wi"].sharding.spec[0] == "expert"
            hlo = step.lower(p, xs, ct).compile().as_text()
            assert "all-to-all" in hlo
            full = [f"f32[{E},{D},{F}]", f"f32[{E},{F},{D}]"]
            gathers = [ln for ln in hlo.splitlines() if re.search(r"\ball-gather(-start)?\(", ln)]
            assert not [ln for ln in gathers if any(s in ln.split("=")[0] for s in full)], gathers
            if backend == "capacity":  # tokens move by all-to-all only: nothing is gathered
                assert not gathers, gathers
    np.testing.assert_allclose(y, y0, atol=1e-5)
    np.testing.assert_allclose(val, val0, rtol=1e-5)
    for name in grads0:
        np.testing.assert_allclose(grads[name], grads0[name], atol=1e-5, rtol=1e-4, err_msg=name)
    for name in ("load_balance", "dropped_fraction", "z_loss"):
        np.testing.assert_allclose(metrics[name], m0[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(metrics["load_balance"], numpy_load_balance(params, x), rtol=1e-5)


@pytest.mark.parametrize("data,expert", MESHES)
def test_load_balance_inside_shard_map_is_global(data, expert):
    """Inside shard_map each device sees a shard; with axis_name the loss is the whole-batch value
    (and differs from a single shard's local value)."""
    mesh = make_mesh(data, expert)
    logits = jax.random.normal(jax.random.key(5), (G, S, E)) * 3.0
    probs = jax.nn.softmax(logits, -1)
    index = jax.lax.top_k(probs, K)[1]
    axes = ("data", "expert")

    def local(p, i):
        return losses.switch_load_balance(p, i, axis_name=axes), losses.switch_load_balance(p, i)[
            None
        ]

    fn = jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes)), out_specs=(P(), P(axes)))
    )
    global_lb, local_lb = fn(probs, index)
    pn, idx = np.asarray(probs, np.float64), np.asarray(index).reshape(-1)
    expect = E * np.sum(np.bincount(idx, minlength=E) / idx.size * pn.reshape(-1, E).mean(0))
    np.testing.assert_allclose(global_lb, expect, rtol=1e-5)
    if data * expert > 1:
        assert np.max(np.abs(np.asarray(local_lb) - expect)) > 1e-3


@pytest.mark.parametrize("backend", ["ep", "ep_ragged"])
def test_experts_not_divisible_by_expert_axis_is_a_one_line_error(backend):
    model = MoEMLP(num_experts=6, hidden=F, k=2, backend=backend)
    x = jnp.zeros((1, S, D))  # even for a batch the layer would run on the capacity path
    with jax.set_mesh(make_mesh(2, 4)), nn.logical_axis_rules(RULES):
        with pytest.raises(UserError) as err:
            jax.eval_shape(model.init, jax.random.key(0), x)
    msg = str(err.value)
    assert "model.moe.num_experts=6" in msg and "mesh.expert" in msg and "\n" not in msg

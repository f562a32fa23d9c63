"""The ragged_all_to_all exchange plan against a numpy simulation of the collective (CPU), and the
dispatcher's fallbacks for backend='ep_ragged' on XLA:CPU (padded `ep` that keeps every token, the
same numbers as `dropless`). The collective itself runs only on accelerators."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from netlab.moe import dispatch, experts
from netlab.moe.layer import MoEMLP
from netlab.moe.ragged import exchange_plan, received_expert_ids
from netlab.sharding import mesh as meshlib


def simulate(operands, outputs, plans):
    """ragged_all_to_all semantics: sender i writes operand_i[in_off[j]:+size[j]] at out_off[j]
    on j."""
    outs = [o.copy() for o in outputs]
    for i, plan in enumerate(plans):
        for j in range(len(plans)):
            n = int(plan["send_sizes"][j])
            src = int(plan["input_offsets"][j])
            dst = int(plan["output_offsets"][j])
            outs[j][dst : dst + n] = operands[i][src : src + n]
            assert int(plans[j]["recv_sizes"][i]) == n
    return outs


@pytest.mark.parametrize("seed", [0, 1])
def test_exchange_plan_routes_every_row_to_its_expert_and_back(seed):
    ep, el = 3, 2
    e = ep * el
    rng = np.random.default_rng(seed)
    all_sizes = rng.integers(0, 5, (ep, e))
    all_sizes[0, :el] = 0  # an empty segment
    rows = [np.concatenate([np.full(all_sizes[i, x], x) for x in range(e)]) for i in range(ep)]
    # a row's identity: (source, expert, position in source)
    tags = [np.stack([np.full(len(r), i), r, np.arange(len(r))], 1) for i, r in enumerate(rows)]
    cap = sum(len(r) for r in rows)
    plans = [exchange_plan(jnp.asarray(all_sizes), me, el) for me in range(ep)]
    plans = [jax.tree.map(np.asarray, p) for p in plans]
    recv = simulate(tags, [np.full((cap, 3), -1) for _ in range(ep)], [p[0] for p in plans])
    for j in range(ep):
        got = recv[j][recv[j][:, 0] >= 0]
        n = int(plans[j][0]["recv_sizes"].sum())
        assert len(got) == n and (recv[j][n:, 0] == -1).all()  # contiguous, then padding
        expect = np.concatenate(
            [t[(t[:, 1] // el) == j] for t in tags]
        )  # sources in order, sorted by expert
        np.testing.assert_array_equal(got, expect)
        labels = np.asarray(received_expert_ids(jnp.asarray(all_sizes), j, el, cap))
        np.testing.assert_array_equal(labels[:n], got[:, 1] - j * el)
        assert (labels[n:] == el).all()
    back = simulate(recv, [np.full((len(r), 3), -1) for r in rows], [p[1] for p in plans])
    for i in range(ep):
        np.testing.assert_array_equal(back[i], tags[i])  # every row returns to its place


def test_ep_ragged_on_cpu_falls_back_to_ep_that_drops_nothing():
    spec = experts.ExpertSpec()
    mesh = meshlib.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=1, expert=4, tensor=1)))
    names = lambda r: (r[0].__name__, r[1])
    assert names(dispatch.choose("ep_ragged", 8, 8, spec)) == ("Capacity", True)  # no mesh
    with jax.set_mesh(mesh):
        assert names(dispatch.choose("ep_ragged", 8, 8, spec)) == ("ExpertParallel", True)
        assert names(dispatch.choose("ep_ragged", 1, 8, spec)) == ("Capacity", True)  # 1 row
        assert names(dispatch.choose("ep", 8, 8, spec)) == ("ExpertParallel", False)
    # a capacity factor that drops on a slotted backend: the fallback still keeps every token
    x = jax.random.normal(jax.random.key(0), (8, 8, 16))
    model = MoEMLP(
        num_experts=8,
        hidden=8,
        k=2,
        backend="ep_ragged",
        capacity_factor=0.25,
        eval_capacity_factor=0.25,
    )
    params = nn.unbox(jax.jit(model.init)(jax.random.key(1), x))["params"]
    params = dict(params, router=params["router"] * 30.0)
    rules = (("batch", ("data", "fsdp", "expert")), ("expert", "expert"))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        y = jax.jit(model.apply)({"params": params}, x)
    y_dropless = jax.jit(model.clone(backend="dropless").apply)({"params": params}, x)
    y_capacity = jax.jit(model.clone(backend="capacity").apply)({"params": params}, x)
    np.testing.assert_allclose(y, y_dropless, atol=1e-5)
    assert float(jnp.abs(y_capacity - y_dropless).max()) > 1e-3  # capacity 0.25 drops tokens

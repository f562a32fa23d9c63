"""Every dispatch backend equals a per-expert Python-loop reference (forward and gradients) at a
capacity that drops nothing; the reference routes on its own (threshold on the k-th probability).
`ep_ragged` runs through its CPU fallback (padded `ep` that keeps every token); shared experts are
a dense MLP added to the routed output."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.moe.layer import MoEMLP
from netlab.moe.shared import RoutedAndSharedMoE

G, S, D, F, E = 4, 8, 16, 32, 8


def ffn(x, wi, wo, wg=None):
    h = jax.nn.gelu(x @ wi) if wg is None else jax.nn.silu(x @ wi) * (x @ wg)
    return h @ wo


def reference(params, x, k, router, capacity=None, glu=False):
    """Per-expert loop: y = Σ_e gate_e(x) · FFN_e(x), gates built without slots or einsums."""
    probs = jax.nn.softmax(jnp.einsum("gsd,de->gse", x, params["router"]), -1)
    if router == "topk":
        kth = jnp.sort(probs, -1)[..., -k][..., None]
        gates = jnp.where(probs >= kth, probs, 0.0)
    else:  # expert choice: expert e keeps its `capacity` most probable tokens of each group
        kth = jnp.sort(probs, axis=1)[:, -capacity][:, None, :]
        gates = jnp.where(probs >= kth, probs, 0.0)
    y = jnp.zeros_like(x)
    for e in range(E):
        wg = params["wg"][e] if glu else None
        y = y + gates[..., e : e + 1] * ffn(x, params["wi"][e], params["wo"][e], wg)
    return y


def forward_and_vjp(f, p, x, ct):
    y, pull = jax.vjp(f, p, x)
    return y, pull(ct)


_REF = {}


def reference_vjp(router, k, glu):
    key = (router, k, glu)
    if key not in _REF:
        _REF[key] = jax.jit(
            lambda p, x, ct: forward_and_vjp(
                lambda p, x: reference(p, x, k, router, capacity=4, glu=glu), p, x, ct
            )
        )
    return _REF[key]


@pytest.fixture(scope="module")
def data():
    x = jax.random.normal(jax.random.key(0), (G, S, D))
    ct = jax.random.normal(jax.random.key(1), (G, S, D))
    return x, ct


CASES = [
    ("topk", 2, "dense", False, False),
    ("topk", 1, "capacity", False, False),
    ("topk", 2, "capacity", True, False),
    ("topk", 2, "dropless", False, True),
    ("topk", 2, "ep", True, False),
    ("expert_choice", 2, "capacity", False, False),
    ("topk", 2, "ep_ragged", False, False),
]


@pytest.mark.parametrize("router,k,backend,bpr,glu", CASES)
def test_backend_matches_loop_reference(data, router, k, backend, bpr, glu):
    x, ct = data
    cf = None if router == "topk" else 1.0  # expert choice: C = ceil(2*8*1/8) rounded to 4 = 4 < S
    if backend == "ep_ragged":
        cf = 0.5  # would drop on a slotted backend: the fallback must keep all tokens
    m = MoEMLP(
        num_experts=E,
        hidden=F,
        k=k,
        router=router,
        backend=backend,
        bpr=bpr,
        glu=glu,
        activation="silu" if glu else "gelu",
        capacity_factor=cf,
        eval_capacity_factor=cf,
    )
    params = nn.unbox(jax.jit(m.init)(jax.random.key(2), x)["params"])
    # a sharper router than the init so routing decisions are far from ties
    params = dict(params, router=params["router"] * 50.0)
    y, (gp, gx) = jax.jit(
        lambda p, x, ct: forward_and_vjp(lambda p, x: m.apply({"params": p}, x), p, x, ct)
    )(params, x, ct)
    yr, (gpr, gxr) = reference_vjp(router, k, glu)(params, x, ct)
    np.testing.assert_allclose(y, yr, atol=2e-5, rtol=1e-5)
    assert float(jnp.abs(yr).max()) > 1e-2
    np.testing.assert_allclose(gx, gxr, atol=1e-4, rtol=1e-4)
    for name in gpr:
        np.testing.assert_allclose(gp[name], gpr[name], atol=1e-4, rtol=1e-4, err_msg=name)
    assert float(jnp.abs(gp["router"]).max()) > 0  # the router learns through the combine weights


def test_shared_experts_add_a_dense_mlp(data):
    x, _ = data
    base = MoEMLP(num_experts=E, hidden=F, k=2, capacity_factor=None, eval_capacity_factor=None)
    shared = RoutedAndSharedMoE(
        num_experts=E,
        hidden=F,
        k=2,
        capacity_factor=None,
        eval_capacity_factor=None,
        num_shared=2,
        shared_hidden=8,
    )
    p = nn.unbox(jax.jit(shared.init)(jax.random.key(3), x)["params"])
    y = jax.jit(shared.apply)({"params": p}, x)
    y_routed = jax.jit(base.apply)({"params": p["routed"]}, x)
    expect = y_routed + jax.nn.gelu(x @ p["shared"]["wi"]) @ p["shared"]["wo"]
    assert p["shared"]["wi"].shape == (D, 16) and set(p) == {"routed", "shared"}
    np.testing.assert_allclose(y, expect, atol=1e-5)

"""Task-MoE (netlab/moe/task_moe.py): task-level routing against a numpy gate, against top-k token
choice on a constant input, and the extracted per-task sub-network."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.moe import task_moe
from netlab.moe.layer import MoEMLP
from netlab.nn import aux

E, K, T, D, F, S = 4, 2, 3, 8, 16, 5
TASKS = np.array([0, 1, 2, 0, 2, 1], np.int32)
COLS = ("intermediates", *aux.COLLECTIONS)


GATE = np.array([[2.0, 1.0, 0, 0], [0, 0, 1.0, 2.0], [0, 2.0, 0, 1.0]], np.float32)


@pytest.fixture(scope="module")
def run():
    """Everything the tests compare, in one compiled program: the layer's init and output, each
    task's extracted sub-network on that task's sequences, and the one-task layer next to the
    top-k router on a constant input."""
    layer = task_moe.TaskMoEMLP(num_experts=E, hidden=F, num_tasks=T, k=K)
    ref = MoEMLP(num_experts=E, hidden=F, k=K, router="topk", backend="dense")
    one = task_moe.TaskMoEMLP(num_experts=E, hidden=F, num_tasks=1, k=K)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(len(TASKS), S, D)), jnp.float32)
    c = jnp.asarray(rng.normal(size=D), jnp.float32)
    const = jnp.broadcast_to(c, (2, S, D))
    w_router = jnp.asarray(rng.normal(size=(D, E)), jnp.float32)

    @jax.jit
    def everything(key):
        params = nn.meta.unbox(layer.init(key, x, TASKS)["params"])
        params["task_gate"] = jnp.asarray(GATE)  # three tasks, three different expert pairs
        y, cols = layer.apply({"params": params}, x, TASKS, mutable=COLS)
        sub = {t: task_moe.extract(params, t, K) for t in range(T)}
        served = {t: task_moe.apply_extracted(sub[t], x[TASKS == t]) for t in range(T)}
        p = {"wi": params["wi"], "wo": params["wo"], "router": w_router}
        y_ref, _ = ref.apply({"params": p}, const, mutable=COLS)
        q = {"wi": p["wi"], "wo": p["wo"], "task_gate": (c @ w_router)[None]}
        y_one, _ = one.apply({"params": q}, const, jnp.zeros(2, jnp.int32), mutable=COLS)
        return dict(params=params, y=y, cols=cols, sub=sub, served=served, ref=y_ref, one=y_one)

    return x, everything(jax.random.key(0))


def test_tokens_of_a_task_share_experts_and_mix_by_the_task_gate(run):
    x, out = run
    params, y, cols = out["params"], out["y"], out["cols"]
    chosen = np.asarray(cols["intermediates"]["task_experts"][0])  # (G, k)
    for t in range(T):
        rows = chosen[TASKS == t]
        assert (rows == rows[0]).all()
    # numpy gate: softmax of the task's row, top-k, weights p[top-k]; experts run densely
    z = GATE.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :K]
    gates = np.zeros((T, E))
    np.put_along_axis(gates, top, np.take_along_axis(p, top, 1), 1)
    assert {tuple(sorted(r)) for r in top} == {(0, 1), (2, 3), (1, 3)}
    wi, wo = np.asarray(params["wi"], np.float64), np.asarray(params["wo"], np.float64)
    h = np.einsum("gsd,edf->egsf", np.asarray(x, np.float64), wi)
    gelu = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))  # jax.nn.gelu
    want = np.einsum("ge,egsf,efd->gsd", gates[TASKS], gelu, wo)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)
    assert float(aux.total_loss(cols)) > 0


def test_extracted_subnetwork_serves_its_task_exactly(run):
    """The paper's deployment claim: a task's k experts, cut out, give the full model's output."""
    _, out = run
    for t in range(T):
        assert out["sub"][t]["wi"].shape == (K, D, F) and "task_gate" not in out["sub"][t]
        want = np.asarray(out["y"])[TASKS == t]
        np.testing.assert_allclose(np.asarray(out["served"][t]), want, rtol=0, atol=1e-6)


def test_one_task_is_topk_token_choice_on_a_constant_input(run):
    """One task = the top-k router (dense backend) whose every token is the same vector c, with
    the task's gate row set to c W_r."""
    _, out = run
    np.testing.assert_allclose(np.asarray(out["one"]), np.asarray(out["ref"]), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(out["one"])).max() > 0


def test_bad_k_is_a_user_error():
    layer = task_moe.TaskMoEMLP(num_experts=E, hidden=F, num_tasks=T, k=E + 1)
    with pytest.raises(UserError, match="model.moe.k"):
        layer.check()

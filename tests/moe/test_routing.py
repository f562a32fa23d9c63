"""Routers against numpy: capacity drops and BPR order, expert choice fill, Soft MoE normalisation,
SMEAR with one-hot routing, aux losses, and one-line errors for bad inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.moe import losses
from netlab.moe import routing as R
from netlab.moe.expert_choice import expert_choice_routing
from netlab.moe.layer import MoEMLP
from netlab.moe.smear import SMEARMLP, smear_apply
from netlab.moe.soft_moe import soft_moe_routing


def numpy_capacity_routing(logits, k, capacity, bpr):
    """Independent simulation: k-major passes, tokens in (priority) order, first come first
    served."""
    logits = np.asarray(logits, np.float64)
    g, s, e = logits.shape
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    kept = np.zeros((g, s, k), bool)
    for gi in range(g):
        top = np.argsort(-probs[gi], axis=-1, kind="stable")[:, :k]
        order = np.argsort(-probs[gi].max(-1), kind="stable") if bpr else np.arange(s)
        fill = np.zeros(e, int)
        for j in range(k):
            for t in order:
                ex = top[t, j]
                if fill[ex] < capacity:
                    fill[ex] += 1
                    kept[gi, t, j] = True
    return kept


def crafted_logits():
    """2 groups of 8 tokens, 4 experts: every token's first choice is expert 0 with rising
    confidence along the sequence (group 0) or falling (group 1); second choices spread over
    1..3."""
    s, e = 8, 4
    conf = np.linspace(1.0, 3.0, s)
    z = np.zeros((2, s, e), np.float32)
    for gi, c in enumerate([conf, conf[::-1]]):
        z[gi, :, 0] = 4.0 + c
        z[gi, np.arange(s), 1 + np.arange(s) % 3] = 2.0
    return jnp.asarray(z)


@pytest.mark.parametrize("bpr", [False, True])
def test_overload_drops_match_numpy_and_bpr_keeps_confident_tokens(bpr):
    logits = crafted_logits()
    k, cap = 2, R.capacity(8, 4, 2, 0.75, multiple=1)  # ceil(2*8*0.75/4) = 3 < 8 wanted by expert 0
    assert cap == 3
    r = jax.tree.map(
        np.asarray,
        jax.jit(R.top_k_routing, static_argnums=(1, 2), static_argnames="bpr")(
            logits, k, cap, bpr=bpr
        ),
    )
    kept_np = numpy_capacity_routing(logits, k, cap, bpr)
    kept = np.einsum("gske,gsec->gsk", np.eye(4)[r.index], r.dispatch) > 0.5
    np.testing.assert_array_equal(kept, kept_np)
    dropped = np.asarray(losses.dropped_fraction(r.dispatch, k))
    np.testing.assert_allclose(dropped, 1.0 - kept_np.mean(), rtol=1e-6)
    kept_top1 = [set(np.flatnonzero(kept[g, :, 0])) for g in range(2)]
    if bpr:  # the 3 most confident tokens win expert 0 in both groups
        assert kept_top1 == [{5, 6, 7}, {0, 1, 2}]
    else:  # first come, first served
        assert kept_top1 == [{0, 1, 2}, {0, 1, 2}]
    # every expert holds at most `cap` tokens, each slot at most one token
    assert float(r.dispatch.sum((1, 3)).max()) <= cap
    assert float(r.dispatch.sum(1).max()) <= 1.0
    # combine = weight on kept assignments only
    np.testing.assert_allclose(r.combine.sum((2, 3)), (r.weight * kept).sum(-1), rtol=1e-6)


def test_top1_fills_before_second_choices():
    """k-major order: a second choice never takes a slot a later token's first choice needs."""
    z = np.full((1, 4, 2), 0.0, np.float32)
    z[0, 0] = [5.0, 4.0]  # token 0: first choice 0, second choice 1
    z[0, 1:] = [0.0, 5.0]  # tokens 1-3: first choice 1
    r = R.top_k_routing(jnp.asarray(z), 2, 3)
    kept = np.asarray(jnp.einsum("gske,gsec->gsk", jax.nn.one_hot(r.index, 2), r.dispatch)) > 0.5
    assert kept[0, :, 0].all() and not kept[0, 0, 1]  # token 0's second choice is the one dropped


def test_expert_choice_fills_every_expert_exactly():
    logits = jax.random.normal(jax.random.key(0), (3, 16, 4))
    cap = 6
    r = jax.tree.map(np.asarray, jax.jit(expert_choice_routing, static_argnums=1)(logits, cap))
    np.testing.assert_array_equal(np.asarray(r.dispatch.sum(1)), 1.0)  # each slot one token
    np.testing.assert_array_equal(np.asarray(r.dispatch.sum((1, 3))), cap)  # each expert full
    probs = np.asarray(jax.nn.softmax(logits, -1))
    chosen = np.asarray(r.dispatch.sum(-1)) > 0.5  # (G, S, E)
    for g in range(3):
        for e in range(4):
            assert set(np.flatnonzero(chosen[g, :, e])) == set(np.argsort(-probs[g, :, e])[:cap])
    np.testing.assert_allclose(r.combine.sum(-1), probs * chosen, rtol=1e-6)


def test_soft_moe_dispatch_and_combine_are_normalised_softmaxes():
    x = jax.random.normal(jax.random.key(1), (2, 10, 8))
    phi = jax.random.normal(jax.random.key(2), (8, 4, 3))
    r = jax.tree.map(np.asarray, jax.jit(soft_moe_routing)(x, phi, 2.0))
    np.testing.assert_allclose(r.dispatch.sum(1), 1.0, rtol=1e-5)  # over tokens, per slot
    np.testing.assert_allclose(r.combine.sum((2, 3)), 1.0, rtol=1e-5)  # over all slots, per token
    xn = np.asarray(x, np.float64) / np.linalg.norm(
        np.asarray(x, np.float64), axis=-1, keepdims=True
    )
    pn = np.asarray(phi, np.float64) / np.linalg.norm(
        np.asarray(phi, np.float64), axis=0, keepdims=True
    )
    lg = 2.0 * np.einsum("gsd,dep->gsep", xn, pn)
    disp = np.exp(lg - lg.max(1, keepdims=True))
    disp /= disp.sum(1, keepdims=True)
    comb = np.exp(lg - lg.max((2, 3), keepdims=True))
    comb /= comb.sum((2, 3), keepdims=True)
    np.testing.assert_allclose(r.dispatch, disp, atol=1e-5)
    np.testing.assert_allclose(r.combine, comb, atol=1e-5)


def test_smear_with_one_hot_routing_is_the_chosen_expert():
    model = SMEARMLP(num_experts=4, hidden=12)
    x = jax.random.normal(jax.random.key(3), (3, 5, 8))
    params = nn.unbox(jax.jit(model.init)(jax.random.key(4), x)["params"])
    rng = np.random.default_rng(5)
    params = jax.tree.map(
        lambda p: np.asarray(p) + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params
    )
    stacked = {k: params[k] for k in ("wi", "bi", "wo", "bo")}
    chosen = np.array([2, 0, 3])
    y = jax.jit(smear_apply)(jax.nn.one_hot(chosen, 4), stacked, x)
    for g, e in enumerate(chosen):
        xg, wi, bi = (
            np.asarray(x[g], np.float64),
            np.asarray(params["wi"][e]),
            np.asarray(params["bi"][e]),
        )
        pre = xg @ wi + bi
        h = (
            0.5 * pre * (1 + np.tanh(np.sqrt(2 / np.pi) * (pre + 0.044715 * pre**3)))
        )  # gelu (tanh form)
        np.testing.assert_allclose(
            y[g], h @ np.asarray(params["wo"][e]) + np.asarray(params["bo"][e]), atol=1e-5
        )
    # a soft mix is not any single expert, and the module is differentiable in the router
    grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x) ** 2)))(params)
    assert float(jnp.abs(grad["router"]["kernel"]).max()) > 0


def test_load_balance_is_one_when_balanced_and_larger_when_not():
    e = 4
    probs = jnp.full((1, 8, e), 1.0 / e)
    balanced = jnp.array([[[0, 1], [2, 3], [1, 2], [3, 0], [0, 1], [2, 3], [1, 2], [3, 0]]])
    np.testing.assert_allclose(losses.switch_load_balance(probs, balanced), 1.0, rtol=1e-6)
    skew_p = jnp.tile(jnp.array([0.7, 0.1, 0.1, 0.1]), (1, 8, 1))
    skew_i = jnp.tile(jnp.array([0, 1]), (1, 8, 1))
    # E * (f0*P0 + f1*P1) = 4 * (0.5*0.7 + 0.5*0.1)
    np.testing.assert_allclose(losses.switch_load_balance(skew_p, skew_i), 1.6, rtol=1e-6)
    z = jnp.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(
        losses.router_z_loss(z), np.log(np.exp([1, 2, 3]).sum()) ** 2, rtol=1e-6
    )


def test_top_k_larger_than_experts_is_a_one_line_error():
    model = MoEMLP(num_experts=4, hidden=8, k=5)
    with pytest.raises(ValueError) as err:
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 4, 8)))
    msg = str(err.value)
    assert "k=5" in msg and "num_experts=4" in msg and "\n" not in msg


def test_unknown_backend_and_bad_capacity_are_one_line_errors():
    with pytest.raises(
        UserError,
        match="model.moe.backend='fast': unknown backend; choose one of "
        "capacity, dense, dropless, ep, ep_ragged",
    ):
        jax.eval_shape(
            MoEMLP(num_experts=4, hidden=8, backend="fast").init,
            jax.random.key(0),
            jnp.zeros((1, 4, 8)),
        )
    with pytest.raises(UserError, match="capacity_factor"):
        R.capacity(8, 4, 2, -1.0)
    with pytest.raises(UserError, match="model.moe.capacity_factor='big'"):
        MoEMLP(num_experts=4, hidden=8, capacity_factor="big").check()
    assert MoEMLP(num_experts=4, hidden=8, capacity_factor=-1.0).capacity(8, True) == 8


def test_vmoe_importance_and_load_losses_match_numpy():
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 6, 4)).astype(np.float32)
    noise = (0.25 * rng.standard_normal(logits.shape)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    imp = probs.reshape(-1, 4).sum(0)
    np.testing.assert_allclose(
        jax.jit(losses.importance_loss)(probs), imp.var() / imp.mean() ** 2, rtol=1e-4
    )
    k, sigma = 2, 0.25
    tau = np.sort(logits + noise, -1)[..., -k][..., None]
    load = (1.0 - norm.cdf((tau - logits) / sigma)).reshape(-1, 4).sum(0)
    got = jax.jit(losses.load_loss, static_argnums=(2, 3))(logits, noise, k, sigma)
    np.testing.assert_allclose(got, load.var() / load.mean() ** 2, rtol=1e-4)
    assert float(got) > 0


@pytest.mark.parametrize("router", ["expert_choice", "soft", "smear"])
def test_non_causal_router_in_the_lm_is_a_one_line_error(router):
    from netlab.moe.lm import MoELM

    model = MoELM(
        max_len=8,
        width=16,
        depth=1,
        num_heads=2,
        moe=dict(num_experts=4, hidden=8, router=router, backend="dense"),
    )
    with pytest.raises(UserError, match="leaks future tokens") as err:
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 8), jnp.int32))
    assert "\n" not in str(
        err.value
    ) and "choose one of hyper, loss_free, sparsemixer, topk" in str(err.value)


@pytest.mark.parametrize("k", [1, 2, 3, 9])
def test_top_k_is_a_stable_descending_sort(k):
    """Both paths (argmax rounds for k <= 8, a sort above) give numpy's stable order: ties to the
    lower index, -inf entries still picked before repeats, values equal to x at the indices."""
    rng = np.random.default_rng(k)
    x = rng.integers(-3, 3, (40, 12)).astype(np.float32)  # many ties
    x[0, :] = -np.inf
    x[1, 2:] = -np.inf
    vals, idx = R.top_k(jnp.asarray(x), k)
    expect = np.argsort(-x, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, expect)
    np.testing.assert_array_equal(vals, np.take_along_axis(x, expect, -1))

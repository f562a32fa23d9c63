"""BinaryConnect (Courbariaux et al. 2015): the forward pass sees only +-1 weights (deterministic
signs; stochastic draws with E[w_b] = w on [-1, 1]); the gradient with respect to the real weights
is the gradient with respect to the binary ones (straight-through); after any update the real
weights stay in [-1, 1] while biases are neither binarised nor clipped. One jitted call."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from netlab.errors import UserError
from netlab.train import binaryconnect as bc
from netlab.train import optim

RNG = np.random.default_rng(0)


def test_binary_forward_straight_through_gradient_and_clipping():
    model = nn.Dense(5)
    w = RNG.uniform(-1, 1, size=(6, 5)).astype(np.float32)
    w[0, 0] = 0.0  # sign(0) = +1 (eq. 1)
    p = {"kernel": w, "bias": RNG.normal(size=(5,)).astype(np.float32)}
    x = RNG.normal(size=(3, 6)).astype(np.float32)
    det = bc.binarized(model.apply)
    sto = bc.binarized(model.apply, "stochastic")
    keys = jax.random.split(jax.random.key(0), 3)
    tx = optax.chain(optax.sgd(5.0), bc.clip_weights())

    def loss(apply, p, **kw):
        return jnp.sum(jnp.sin(apply({"params": p}, x, **kw)))

    @jax.jit
    def run(p):
        eye = jnp.eye(6)
        no_bias = dict(p, bias=jnp.zeros(5))
        seen_det = det({"params": no_bias}, eye)  # rows of the weights the forward used
        seen_sto = sto({"params": no_bias}, eye, binary_rng=keys[1])
        draws = bc.binarize(jnp.broadcast_to(p["kernel"], (2000, 6, 5)), keys[2])
        g_real = jax.grad(lambda p: loss(det, p))(p)
        g_bin = jax.grad(lambda p: loss(model.apply, p))(dict(p, kernel=bc.binarize(p["kernel"])))
        g_sto = jax.grad(lambda p: loss(sto, p, binary_rng=keys[0]))(p)
        wb0 = bc.binarize(p["kernel"], jax.random.fold_in(keys[0], 1))  # kernel is leaf 1
        g_sto_bin = jax.grad(lambda p: loss(model.apply, p))(dict(p, kernel=wb0))
        upd, _ = tx.update(g_real, tx.init(p), p)
        return (
            seen_det,
            seen_sto,
            draws,
            g_real,
            g_bin,
            g_sto,
            g_sto_bin,
            optax.apply_updates(p, upd),
            sto({"params": p}, x),
            model.apply({"params": p}, x),
        )

    seen_det, seen_sto, draws, g_real, g_bin, g_sto, g_sto_bin, new, eval_sto, plain = run(p)
    np.testing.assert_array_equal(seen_det, np.where(w >= 0, 1.0, -1.0))
    assert set(np.unique(seen_sto)) == {-1.0, 1.0} and seen_sto.shape == w.shape
    # stochastic: P(+1) = hard_sigmoid(w), so E[w_b] = w (2000 draws: std <= 0.023)
    np.testing.assert_allclose(draws.mean(0), w, atol=0.09)
    # straight-through: d loss / d w (real) == d loss / d w_b (evaluated at the binary weights)
    for a, b in ((g_real, g_bin), (g_sto, g_sto_bin)):
        np.testing.assert_allclose(a["kernel"], b["kernel"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a["bias"], b["bias"], rtol=1e-6, atol=1e-6)
    # the update is real-valued and the kernel is clipped to [-1, 1]; the bias is not clipped
    k = np.asarray(new["kernel"])
    assert k.min() >= -1.0 and k.max() <= 1.0
    assert np.isin(k, (-1.0, 1.0)).any() and not np.isin(k, (-1.0, 1.0)).all()
    np.testing.assert_allclose(new["bias"], p["bias"] - 5.0 * g_real["bias"], rtol=1e-6)
    # evaluation with stochastic BinaryConnect uses the real-valued weights (Sec. 2.6)
    np.testing.assert_allclose(eval_sto, plain, rtol=1e-6)


def test_optimizer_binaryconnect_is_algorithm_1():
    """`optimizer.binaryconnect`: the parameters become sign(w) after each step, where
    the real weights in the state follow w <- clip(w - lr g, -1, 1) with g taken at the binary
    parameters; biases follow plain SGD."""
    opt = common.base_config().optimizer
    opt.name, opt.schedule, opt.lr, opt.momentum = "sgd", "constant", 0.3, 0.0
    opt.binaryconnect = "deterministic"
    tx = optim.build(opt, 10)
    opt.binaryconnect = "stochastic"
    tx_sto = optim.build(opt, 10)
    opt.binaryconnect = "binary"
    with pytest.raises(UserError, match="optimizer.binaryconnect='binary'"):
        optim.build(opt, 10)
    p = {"kernel": RNG.normal(0, 0.5, size=(4, 3)).astype(np.float32)}
    p["bias"] = RNG.normal(size=(3,)).astype(np.float32)
    x = RNG.normal(size=(5, 4)).astype(np.float32)

    def grad(p):
        return jax.grad(lambda p: jnp.sum(jnp.sin(x @ p["kernel"] + p["bias"])))(p)

    @jax.jit
    def run(p):
        out = []
        for t in (tx, tx_sto):
            params, state = p, t.init(p)
            for _ in range(2):
                g = grad(params)
                upd, state = t.update(g, state, params)
                out.append((params, g, optax.apply_updates(params, upd), state[0]))
                params = out[-1][2]
        return out

    steps = run(p)
    real = np.clip(p["kernel"], -1, 1)
    for i, (params, g, new, real_state) in enumerate(steps):
        k = np.asarray(new["kernel"])
        assert np.abs(np.abs(k) - 1).max() <= 2**-22, i  # +-1 after every step (see _land)
        if i < 2:  # deterministic: w <- clip(w - lr g), w_b = sign(w)
            real = np.clip(real - 0.3 * np.asarray(g["kernel"]), -1, 1)
            np.testing.assert_allclose(real_state["kernel"], real, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(np.sign(k), np.where(real >= 0, 1.0, -1.0))
        np.testing.assert_allclose(new["bias"], params["bias"] - 0.3 * g["bias"], rtol=1e-6)
    assert not np.isin(real, (-1.0, 1.0)).all()  # the state keeps the real-valued weights

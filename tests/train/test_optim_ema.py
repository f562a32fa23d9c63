"""Optimizer schedules and masks, and the EMAs (fixed and EDM2 power-function) vs closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.train import ema, optim, validate
from tests.train.helpers import tiny_config


def test_warmup_then_cosine():
    cfg = tiny_config(
        **{
            "optimizer.lr": "0.1",
            "optimizer.warmup_steps": "10",
            "optimizer.schedule": "cosine",
            "optimizer.end_lr_factor": "0.0",
        }
    ).optimizer
    sched = optim.learning_rate(cfg, total_steps=110)
    assert float(sched(5)) == pytest.approx(0.05)
    assert float(sched(10)) == pytest.approx(0.1)
    assert float(sched(60)) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 0.5)), rel=1e-5)
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-7)


def test_weight_decay_mask_skips_vectors():
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones((2,))}
    cfg = tiny_config(
        **{
            "optimizer.name": "adamw",
            "optimizer.lr": "0.0",
            "optimizer.weight_decay": "0.5",
            "optimizer.warmup_steps": "0",
            "optimizer.schedule": "constant",
        }
    ).optimizer
    cfg.unlock()
    cfg.lr = 1.0
    tx = optim.build(cfg, 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.5 * np.ones((3, 2)))  # decayed: -lr * wd * w
    np.testing.assert_allclose(updates["b"], 0.0)  # vectors untouched


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_each_optimizer_descends_a_quadratic(name):
    cfg = tiny_config(
        **{
            "optimizer.name": name,
            "optimizer.lr": "0.05",
            "optimizer.warmup_steps": "0",
            "optimizer.schedule": "constant",
            "optimizer.clip_norm": "10.0",
        }
    ).optimizer
    tx = optim.build(cfg, 100)
    p = {"x": jnp.array([3.0, -2.0])}
    state = tx.init(p)
    for _ in range(60):
        g = jax.grad(lambda q: jnp.sum(q["x"] ** 2))(p)
        u, state = tx.update(g, state, p)
        p = jax.tree.map(jnp.add, p, u)
    assert float(jnp.sum(p["x"] ** 2)) < 13.0 * 0.2


def test_unknown_optimizer_name():
    cfg = tiny_config(**{"optimizer.name": "adamm"}).optimizer
    with pytest.raises(UserError, match="choose one of adamw"):
        optim.build(cfg, 10)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_edm2_std_gamma_roundtrip(sigma_rel):
    assert ema.gamma_to_std(ema.std_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)


def test_power_ema_matches_its_continuous_weighting():
    """EDM2's power EMA weights update t by ~t^gamma, so the average of p_t = t over T updates is
    ~ T (gamma + 1) / (gamma + 2)."""
    gamma = ema.std_to_gamma(0.1)
    slots = {"e": ("power", gamma)}
    state = {"e": jnp.zeros(())}
    T = 2000
    update = jax.jit(lambda s, p, t: ema.update(s, p, t, slots))
    for t in range(T):
        state = update(state, jnp.float32(t + 1), t)
    assert float(state["e"]) == pytest.approx(T * (gamma + 1) / (gamma + 2), rel=2e-3)


def test_fixed_ema_matches_numpy():
    slots = {"e": ("fixed", 0.9)}
    state, ref = {"e": jnp.zeros(())}, 0.0
    for t, p in enumerate([1.0, 4.0, -2.0, 0.5]):
        state = ema.update(state, jnp.float32(p), t, slots)
        ref = 0.9 * ref + 0.1 * p
    assert float(state["e"]) == pytest.approx(ref, rel=1e-6)


def test_amsgrad_adamw_matches_numpy():
    """optimizer.amsgrad with adamw: m, v as Adam, v_max = max(v_max, v / (1 - b2^t)), update
    -lr (m / (1 - b1^t) / (sqrt(v_max) + eps) + wd p) (decoupled decay on matrices only)."""
    cfg = tiny_config(
        **{
            "optimizer.name": "adamw",
            "optimizer.amsgrad": "True",
            "optimizer.lr": "0.1",
            "optimizer.weight_decay": "0.5",
            "optimizer.warmup_steps": "0",
            "optimizer.schedule": "constant",
        }
    ).optimizer
    tx = optim.build(cfg, 10)
    rng = np.random.default_rng(0)
    p = {"w": jnp.asarray(rng.standard_normal((2, 2))), "b": jnp.asarray(rng.standard_normal(2))}
    grads = [jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), p) for _ in range(4)]
    grads[2] = jax.tree.map(lambda g: 0.01 * g, grads[2])  # a small step: v_max keeps the old v
    state, q = tx.init(p), {k: np.asarray(v) for k, v in p.items()}
    m, v, vmax = ({k: np.zeros_like(a) for k, a in q.items()} for _ in range(3))
    for t, g in enumerate(grads, 1):
        u, state = tx.update(g, state, p)
        p = jax.tree.map(jnp.add, p, u)
        for k in q:
            gk = np.asarray(g[k])
            m[k] = 0.9 * m[k] + 0.1 * gk
            v[k] = 0.999 * v[k] + 0.001 * gk**2
            vmax[k] = np.maximum(vmax[k], v[k] / (1 - 0.999**t))
            step = m[k] / (1 - 0.9**t) / (np.sqrt(vmax[k]) + 1e-8)
            q[k] = q[k] - 0.1 * (step + (0.5 * q[k] if k == "w" else 0.0))
    for k in q:
        np.testing.assert_allclose(p[k], q[k], rtol=1e-5, atol=1e-6)


def test_amsgrad_with_another_optimizer_is_a_one_line_error():
    cfg = tiny_config(**{"optimizer.name": "sgd", "optimizer.amsgrad": "True"})
    with pytest.raises(UserError, match="optimizer.amsgrad=True with optimizer.name='sgd'") as e:
        validate.config(cfg)
    assert "\n" not in str(e.value)

"""Pipelined Backpropagation (netlab/train/pipelined_backprop.py): zero delay is SGD with momentum;
SC + LWP rescue a delayed quadratic; one SC / LWP step equals a numpy transcription."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab.errors import UserError
from netlab.train import pipelined_backprop as pb

S = 4
CURV = {f"s{s}": jnp.linspace(0.1, 1.0, 8) for s in range(S)}  # a diagonal quadratic per stage


def quadratic(w, batch):
    return sum(0.5 * jnp.sum(CURV[k] * (w[k] - (0 if batch is None else batch)) ** 2) for k in w)


def test_zero_delay_is_sgd_with_momentum():
    w0 = {k: jnp.ones(8) for k in CURV}
    batches = jnp.linspace(-1.0, 1.0, 12)  # a moving target: the gradients differ every step
    zero = {k: 0 for k in CURV}
    tx = optax.sgd(0.1, momentum=0.9)

    @jax.jit
    def both():
        w_pb, _ = pb.simulate(quadratic, w0, zero, 12, 0.1, 0.9, batches=batches)

        def step(c, b):
            w, s = c
            u, s = tx.update(jax.grad(quadratic)(w, b), s, w)
            return (optax.apply_updates(w, u), s), None

        (w_sgd, _), _ = jax.lax.scan(step, (w0, tx.init(w0)), batches)
        return w_pb, w_sgd

    w_pb, w_sgd = both()
    for k in CURV:
        np.testing.assert_allclose(w_pb[k], w_sgd[k], rtol=1e-6, atol=1e-7)
        assert not np.allclose(w_pb[k], 1.0)


def test_sc_and_lwp_rescue_the_delayed_update():
    """Delays D_s = 7, 5, 3, 1 at lr 0.02, momentum 0.9 (stable without delay): the plain
    delayed SGDM ends 200 steps over 10 times above the SC + LWP run."""
    w0 = {k: jnp.ones(8) for k in CURV}
    delays = dict(zip(CURV, pb.stage_delays(S)))
    assert list(delays.values()) == [7, 5, 3, 1]

    @jax.jit
    def runs():
        kw = dict(steps=200, lr=0.02, momentum=0.9)
        plain = pb.simulate(quadratic, w0, delays, sc=False, lwp=False, **kw)[1]
        fixed = pb.simulate(quadratic, w0, delays, sc=True, lwp=True, **kw)[1]
        return plain, fixed

    plain, fixed = runs()
    start = float(quadratic(w0, None))
    assert float(fixed[-1]) < 0.05 * start
    assert float(plain[-1]) > 10 * float(fixed[-1])


def test_one_step_matches_numpy():
    rng = np.random.default_rng(0)
    w, v, g = (rng.standard_normal(5).astype(np.float32) for _ in range(3))
    lr, m, d = 0.05, 0.9, 3
    tx = pb.spike_compensated_sgd(lr, m, d)
    upd, state = tx.update(jnp.asarray(g), optax.TraceState(trace=jnp.asarray(v)))
    v1 = m * v + g  # numpy transcription of Kosson et al. Sec. 4.1
    a, b = m**d, (1 - m**d) / (1 - m)
    np.testing.assert_allclose(state.trace, v1, rtol=1e-6)
    np.testing.assert_allclose(upd, -lr * (a * v1 + b * g), rtol=1e-5, atol=1e-7)
    # one gradient's total effect is eta / (1 - m), as without delay
    assert a / (1 - m) + b == pytest.approx(1 / (1 - m))
    np.testing.assert_allclose(pb.predict_weights(w, v, lr, d), w - lr * d * v, rtol=1e-6)
    assert pb.sc_coefficients(m, 0) == (1.0, 0.0)
    with pytest.raises(UserError, match="momentum"):
        pb.sc_coefficients(1.0, 2)

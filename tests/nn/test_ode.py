"""The shared ODE core: the adaptive solver meets its tolerance against a matrix exponential, the
fixed-step solvers converge at their order, the continuous adjoint equals backpropagation through
the solver, and its compiled memory does not grow with the step count while backprop's does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from netlab.errors import UserError
from netlab.nn import ode


def _linear_system(seed=0, n=5):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)) / np.sqrt(n) - 0.5 * np.eye(n)
    return a, rng.standard_normal(n)


def test_dopri5_meets_its_tolerance_on_a_linear_ode():
    a, x0 = _linear_system()
    t0, t1, rtol, atol = 0.3, 2.3, 1e-7, 1e-10
    exact = scipy.linalg.expm((t1 - t0) * a) @ x0
    with jax.enable_x64(True):
        aj = jnp.asarray(a)

        def f(t, x):  # a pytree state: the first two coordinates and the rest
            z = aj @ jnp.concatenate([x["u"], x["v"]])
            return {"u": z[:2], "v": z[2:]}

        @jax.jit
        def run(x0, t0, t1, rtol, atol):
            return ode.odeint_dopri5(f, x0, t0, t1, rtol, atol, max_steps=200)

        start = {"u": jnp.asarray(x0[:2]), "v": jnp.asarray(x0[2:])}
        x, info = run(start, t0, t1, rtol, atol)
        got = np.concatenate([x["u"], x["v"]])
        assert bool(info["reached"]) and 4 < int(info["accepted"]) < 200
        assert float(info["t"]) == pytest.approx(t1)
        # the global error stays within a small multiple of the local tolerance
        assert np.max(np.abs(got - exact) / (atol + rtol * np.abs(exact))) < 50
        # and backwards from t1 returns to x0 (t1 < t0)
        back, info = run(x, t1, t0, rtol, atol)
        np.testing.assert_allclose(np.concatenate([back["u"], back["v"]]), x0, atol=1e-5)
        assert bool(info["reached"])
        # a tolerance the step budget cannot meet stops short of t1 and says so
        _, info = run(start, t0, t1, 1e-15, 1e-18)
        assert not bool(info["reached"]) and float(info["t"]) < t1


def test_fixed_step_solvers_converge_at_their_order():
    """dx/dt = -2 t x + cos(t) x (time-dependent): x(t) = x0 exp(-t^2 + sin t)."""
    with jax.enable_x64(True):
        f = lambda t, x: (-2.0 * t + jnp.cos(t)) * x  # noqa: E731
        x0, t0, t1 = jnp.array([1.0, -0.5]), 0.2, 1.4
        exact = np.asarray(x0) * np.exp(-(t1**2) + np.sin(t1) + t0**2 - np.sin(t0))
        orders = {"euler": 1, "heun": 2, "rk4": 4}
        solve = jax.jit(
            lambda x0: {
                (m, n): ode.odeint_fixed(f, x0, t0, t1, n, m) for m in orders for n in (16, 32)
            }
        )
        errs = {k: np.abs(np.asarray(v) - exact).max() for k, v in solve(x0).items()}
        for method, order in orders.items():
            observed = np.log2(errs[method, 16] / errs[method, 32])
            assert abs(observed - order) < 0.3, (method, errs)
    with pytest.raises(UserError, match="method"):
        ode.odeint_fixed(f, x0, t0, t1, 4, "rk5")
    with pytest.raises(UserError, match="fixed-step"):
        ode.solve(lambda t, x, p: x, x0, 0.0, 1.0, method="dopri5", gradient="adjoint")


def test_adjoint_equals_backprop_at_constant_memory():
    """Gradients of a loss on x(t1) of a tiny Neural ODE (the `NeuralODE` layer's dynamics) wrt
    parameters, input and both end times (Alg. 2): adjoint vs backprop through the same Heun
    steps (they differ by the discretisation error); the compiled temp memory of the adjoint
    gradient does not grow from 8 to 64 steps, backprop's grows by at least the 56 extra stored
    states."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 32)))
        layer = ode.NeuralODE(8, num_steps=64, param_dtype=jnp.float64)
        shapes = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
        rng = np.random.default_rng(0)
        params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape)), shapes)

        def loss(params, x, t0, t1, gradient, n):
            out = ode.solve(
                ode.mlp_dynamics, x, t0, t1, params, method="heun", num_steps=n, gradient=gradient
            )
            return jnp.sum(jnp.sin(out))

        temp, results = {}, {}
        for gradient in ("adjoint", "backprop"):
            for n in (8, 64):
                vg = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
                fn = jax.jit(lambda p, x, t0, t1: vg(p, x, t0, t1, gradient, n))
                compiled = fn.lower(params, x, 0.0, 1.0).compile()
                temp[gradient, n] = compiled.memory_analysis().temp_size_in_bytes
                if n == 64:
                    results[gradient] = compiled(params, x, 0.0, 1.0)
        (va, ga), (vb, gb) = results["adjoint"], results["backprop"]
        assert float(va) == float(vb)  # the same forward solve
        for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
            assert np.linalg.norm(u - v) <= 2e-4 * np.linalg.norm(v), (u, v)
        assert temp["adjoint", 64] <= temp["adjoint", 8] * 1.05 + 1024, temp
        assert temp["backprop", 64] - temp["backprop", 8] > 56 * x.size * 8, temp

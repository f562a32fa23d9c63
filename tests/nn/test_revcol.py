"""RevCol (Cai et al. 2023): every column is recovered from the next one, down to column 0's zero
input, and the memory-saving gradient (unrolled, and as a reverse scan) equals ordinary
backpropagation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import revcol

RNG = np.random.default_rng(0)
L, N, C = 3, 3, 6  # levels, columns, channels


def _level(p, lower, upper):
    return jnp.tanh(lower @ p["a"] + upper @ p["b"] + p["c"])


def _param(*shape, scale=0.5):
    return RNG.normal(0, scale, shape).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _run(fns, params, x0, zeros):
    out = revcol.revcol_sequence(fns, params, x0, zeros)
    cols, cur = [out], out
    for p in reversed(params):  # recover every column from the next one
        cur = revcol.column_inverse(fns, p, x0, cur)
        cols.append(cur)

    def loss(run, params, x0):
        return sum(jnp.sum(jnp.sin(x) * (k + 1)) for k, x in enumerate(run(fns, params, x0, zeros)))

    grad = jax.grad(loss, argnums=(1, 2))
    forward = [zeros]
    for p in params:
        forward.append(revcol.column(fns, p, x0, forward[-1]))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    return (
        cols[::-1],
        forward,
        grad(revcol.revcol_sequence, params, x0),
        grad(revcol.plain_columns, params, x0),
        grad(revcol.revcol_scan, stacked, x0),  # the scan form: stacked grads
    )


def test_columns_are_recovered_and_gradients_equal_backprop():
    fns = (_level,) * L
    params = tuple(
        [
            {
                "f": {"a": _param(C, C), "b": _param(C, C), "c": _param(C, scale=0.1)},
                "gamma": (1.0 + _param(C, scale=0.1)),
            }
            for _ in range(L)
        ]
        for _ in range(N)
    )
    x0 = _param(8, C, scale=1.0)
    zeros = tuple(np.zeros((8, C), np.float32) for _ in range(L))
    recovered, forward, g_rev, g_plain, g_scan = _run(fns, params, x0, zeros)
    assert len(recovered) == N + 1
    for got, want in zip(jax.tree.leaves(recovered), jax.tree.leaves(forward)):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert len(jax.tree.leaves(g_rev)) == N * L * 4 + 1
    scale = max(np.abs(b).max() for b in jax.tree.leaves(g_plain))
    for a, b in zip(jax.tree.leaves(g_rev), jax.tree.leaves(g_plain)):  # float32 reconstruction
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    unstack = [jax.tree.map(lambda a, i=i: a[i], g_scan[0]) for i in range(N)]
    for a, b in zip(jax.tree.leaves((unstack, g_scan[1])), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)

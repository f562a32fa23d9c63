"""STanHop (Wu et al. 2024): the generalized sparse Hopfield update at alpha = 1 is the softmax
Hopfield update and at alpha = 2 sparsemax (numpy transcriptions), in between it is entmax (the
fixed-alpha peer); the alpha-derivative matches finite differences; the tandem block is
equivariant to permutations of the series; the memory plug-in ignores the memory slots' order."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import sparse_hopfield, stanhop

RNG = np.random.default_rng(0)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sparsemax(z):
    """Martins & Astudillo 2016, Alg. 1 (sort-based), row by row."""
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape[:-1]):
        v = np.sort(z[idx])[::-1]
        css = np.cumsum(v)
        k = np.arange(1, len(v) + 1)
        support = k[1 + k * v > css].max()
        out[idx] = np.maximum(z[idx] - (css[support - 1] - 1) / support, 0)
    return out


def test_alpha_one_is_softmax_alpha_two_is_sparsemax():
    xi = RNG.normal(size=(3, 4)).astype(np.float32)
    stored = RNG.normal(size=(6, 4)).astype(np.float32)
    beta = 0.8
    upd = jax.jit(jax.vmap(stanhop.gsh_update, in_axes=(None, None, None, 0)))
    out = np.asarray(upd(xi, stored, beta, np.array([1.0, 2.0, 1.5], np.float32)))
    logits = beta * xi @ stored.T
    np.testing.assert_allclose(out[0], _softmax(logits) @ stored, rtol=1e-5, atol=1e-6)
    sparse = _sparsemax(logits.astype(np.float64))
    assert (sparse == 0).any()  # the sparse regime is exercised
    np.testing.assert_allclose(out[1], sparse @ stored, rtol=1e-4, atol=1e-5)
    peer = sparse_hopfield.sparse_hopfield_update(xi, stored, beta, 1.5)
    np.testing.assert_allclose(out[2], np.asarray(peer), rtol=1e-4, atol=1e-5)


def test_alpha_derivative_matches_finite_differences():
    z = (RNG.normal(size=(2, 7)) * 2).astype(np.float32)

    @jax.jit
    def both(a, h):
        f = lambda a: stanhop.gsh_normalize(z, a)  # noqa: E731
        _, tangent = jax.jvp(f, (a,), (jnp.float32(1.0),))
        return tangent, (f(a + h) - f(a - h)) / (2 * h)

    tangent, fd = both(np.float32(1.4), np.float32(1e-3))
    assert np.abs(np.asarray(tangent)).max() > 1e-2
    np.testing.assert_allclose(tangent, fd, atol=2e-3)


def test_tandem_block_series_equivariance_and_memory_order():
    z = RNG.normal(size=(1, 4, 3, 8)).astype(np.float32)  # batch, series, segments, d
    memory = RNG.normal(size=(5, 8)).astype(np.float32)
    block, plug = stanhop.TandemBlock(num_heads=2, routers=2), stanhop.MemoryPlugin()
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda: (block.init(key, z), plug.init(key, z, memory)))
    params = jax.tree.map(lambda s: RNG.normal(size=s.shape).astype(np.float32) * 0.3, shapes)
    perm, mperm = np.array([2, 0, 3, 1]), np.array([4, 2, 0, 1, 3])

    @jax.jit
    def run(pb, pp):
        out = block.apply(pb, jnp.stack([z[0], z[0][perm]]))
        mems = jnp.stack([memory, memory[mperm]])[:, None]  # one memory set per batch row
        return out, plug.apply(pp, jnp.concatenate([z, z]), mems)

    out, mem = map(np.asarray, run(*params))
    np.testing.assert_allclose(out[1], out[0][perm], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mem[1], mem[0], rtol=1e-4, atol=1e-5)
    assert np.abs(mem[0] - z[0]).max() > 1e-3

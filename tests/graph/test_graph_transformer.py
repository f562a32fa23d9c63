"""DiGress's graph transformer layer: permutation equivariance and padding invariance."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph.graph_transformer import GraphTransformerLayer


def test_layer_is_equivariant_and_ignores_padding():
    rng = np.random.default_rng(0)
    n, pad = 6, 2
    x = rng.normal(size=(1, n + pad, 8)).astype(np.float32)
    e = rng.normal(size=(1, n + pad, n + pad, 4)).astype(np.float32)
    e = e + e.transpose(0, 2, 1, 3)
    y = rng.normal(size=(1, 4)).astype(np.float32)
    mask = np.arange(n + pad)[None] < n
    layer = GraphTransformerLayer(8, 4, 4, heads=2)
    shapes = jax.eval_shape(layer.init, jax.random.key(0), x, e, y, mask)
    params = jax.tree.map(lambda s: 0.5 * rng.normal(size=s.shape).astype(np.float32), shapes)
    perm = np.concatenate([rng.permutation(n), np.arange(n, n + pad)])
    garbage_x, garbage_e = x.copy(), e.copy()
    garbage_x[:, n:] = 50.0
    garbage_e[:, n:, :] = -30.0
    garbage_e[:, :, n:] = 20.0
    xs = np.stack([x, x[:, perm], garbage_x])[:, 0]
    es = np.stack([e, e[:, perm][:, :, perm], garbage_e])[:, 0]
    run = jax.jit(
        lambda xs, es: layer.apply(params, xs, es, jnp.repeat(y, 3, 0), mask.repeat(3, 0))
    )
    ox, oe, oy = (np.asarray(o) for o in run(xs, es))
    np.testing.assert_allclose(ox[1], ox[0][perm], atol=1e-5)
    np.testing.assert_allclose(oe[1], oe[0][perm][:, perm], atol=1e-5)
    np.testing.assert_allclose(oy[1], oy[0], atol=1e-5)
    np.testing.assert_allclose(ox[2, :n], ox[0, :n], atol=1e-5)
    np.testing.assert_allclose(oe[2, :n, :n], oe[0, :n, :n], atol=1e-5)
    np.testing.assert_allclose(oy[2], oy[0], atol=1e-5)
    assert np.all(ox[:, n:] == 0) and np.all(oe[:, n:] == 0) and np.all(oe[:, :, n:] == 0)

"""STanHop-Net (netlab/nn/stanhop_net.py): the forecast's shape (horizon not a multiple of the
segment, a resolution whose segments do not pair up), permuting the series permutes the forecast
(the cross-series stage and the shared embeddings), and a STanHop-Block with its Tune-and-Play
memory module switched off (the module's output projection zero) equals the plain tandem block
(its `tandem` part, same parameters)."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import stanhop_net

RNG = np.random.default_rng(0)
# window 12 = 3 segments of 4: the second resolution has 2 (the last segment repeated)
X = RNG.normal(size=(1, 12, 5)).astype(np.float32)
Z = RNG.normal(size=(1, 5, 3, 8)).astype(np.float32)  # batch, series, segments, d
PERM = np.array([3, 0, 4, 1, 2])
NET = stanhop_net.STanHopNet(6, 4, 8, depth=2, memory="tune", num_memories=3)
BLOCK = stanhop_net.STanHopBlock(memory="tune", num_memories=3)  # the net's block0


@jax.jit
def _run(p_net, p_block):
    out = NET.apply({"params": p_net}, jnp.concatenate([X, X[:, :, PERM]]))
    y, inter = BLOCK.apply({"params": p_block}, Z, capture_intermediates=True)
    return out, y, inter["intermediates"]["tandem"]["__call__"][0]


def test_shape_series_permutation_and_memory_off():
    shapes = jax.eval_shape(NET.init, jax.random.key(0), X)["params"]
    p_net = jax.tree.map(lambda s: (0.3 * RNG.normal(size=s.shape)).astype(np.float32), shapes)
    block = p_net["block0"]
    off = dict(block, memory=dict(block["memory"], GSH_0=dict(block["memory"]["GSH_0"])))
    off["memory"]["GSH_0"]["w_o"] = jax.tree.map(np.zeros_like, block["memory"]["GSH_0"]["w_o"])
    out, y_off, plain = map(np.asarray, _run(p_net, off))
    assert out.shape == (2, 6, 5)
    np.testing.assert_allclose(out[1], out[0][:, PERM], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y_off, plain)
    _, y_on, _ = map(np.asarray, _run(p_net, block))
    assert np.abs(y_on - plain).max() > 1e-3  # switched on, the memory is read

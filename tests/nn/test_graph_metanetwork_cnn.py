"""Graph Metanetworks on CNN parameter graphs (Lim et al. 2024): channels are nodes, each
(input, output) channel pair one edge carrying its 3 x 3 kernel slice. Permuting the channels of
the hidden conv layers (and the hidden dense units) leaves the CNN's function and the GMN's output
unchanged; permuting the input channels changes the GMN's output (they keep their identity)."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import graph_metanetwork as gmn

RNG = np.random.default_rng(1)
CONV = (2, 4, 3)  # input channels, two conv layers
DENSE = (5, 2)  # after global average pooling
SIZES = CONV + DENSE


def _net():
    ks = [RNG.normal(size=(3, 3, a, b)).astype(np.float32) for a, b in zip(CONV[:-1], CONV[1:])]
    cb = [RNG.normal(size=b).astype(np.float32) for b in CONV[1:]]
    widths = (CONV[-1], *DENSE)
    ws = [RNG.normal(size=(a, b)).astype(np.float32) for a, b in zip(widths[:-1], widths[1:])]
    bs = [RNG.normal(size=b).astype(np.float32) for b in DENSE]
    return ks, cb, ws, bs


def _apply(net, x):
    ks, cb, ws, bs = net
    for k, b in zip(ks, cb):
        dn = ("NHWC", "HWIO", "NHWC")
        x = jnp.tanh(jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn) + b)
    x = x.mean(axis=(1, 2))
    return jnp.tanh(x @ ws[0] + bs[0]) @ ws[1] + bs[1]


def _permuted(net):
    ks, cb, ws, bs = (list(map(np.copy, part)) for part in net)
    p1, p2, p3 = (RNG.permutation(n) for n in (CONV[1], CONV[2], DENSE[0]))
    ks[0], cb[0], ks[1] = ks[0][..., p1], cb[0][p1], ks[1][:, :, p1, :]
    ks[1], cb[1], ws[0] = ks[1][..., p2], cb[1][p2], ws[0][p2, :]
    ws[0], bs[0], ws[1] = ws[0][:, p3], bs[0][p3], ws[1][p3, :]
    return ks, cb, ws, bs


def test_cnn_graph_metanetwork_is_invariant_to_hidden_channel_permutations():
    net = _net()
    hidden = _permuted(net)
    ks, cb, ws, bs = net
    inputs = ([ks[0][:, :, ::-1], ks[1]], cb, ws, bs)  # swap the two input channels
    model = gmn.GraphMetanetwork(sizes=SIZES, hidden=16, num_layers=2, out_features=3)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), gmn.cnn_parameter_graph(*net)))
    params = jax.tree.map(lambda s: RNG.normal(size=s.shape).astype(np.float32) * 0.5, shapes)
    x = RNG.normal(size=(2, 5, 5, CONV[0])).astype(np.float32)

    @jax.jit
    def run(nets):
        graphs = [gmn.cnn_parameter_graph(*n) for n in nets]
        outs = jnp.stack([model.apply(params, g) for g in graphs])
        return graphs[0], outs, jnp.stack([_apply(n, x) for n in nets[:2]])

    graph, out, f = run([net, hidden, inputs])
    assert graph.edges.shape == (2 * 4 + 4 * 3 + 3 * 5 + 5 * 2, 9 + 2)
    e = 2 * 4 + 1 * 3 + 0  # conv 2, edge from its input channel 1 to output 0: that slice, conv
    np.testing.assert_array_equal(graph.edges[e], np.r_[ks[1][:, :, 1, 0].ravel(), 1, 0])
    np.testing.assert_allclose(f[1], f[0], rtol=1e-5, atol=1e-5)  # same function
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-5)
    assert np.abs(out[2] - out[0]).max() > 1e-3

"""Graph Metanetworks (Lim et al. 2024): the parameter graph round-trips to the MLP's weights, and
the GMN's output is invariant to hidden-neuron permutations of the input MLP (which leave its
function unchanged) but not to permutations of its input neurons (fixed identity)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import graph_metanetwork as gmn

SIZES = (4, 5, 3, 2)
RNG = np.random.default_rng(0)


def _mlp():
    ws = [RNG.normal(size=(a, b)).astype(np.float32) for a, b in zip(SIZES[:-1], SIZES[1:])]
    bs = [RNG.normal(size=b).astype(np.float32) for b in SIZES[1:]]
    return ws, bs


def _apply(ws, bs, x):
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = x @ w + b
        x = np.tanh(x) if i < len(ws) - 1 else x
    return x


def _permute_hidden(ws, bs, perms):
    ws, bs = [w.copy() for w in ws], [b.copy() for b in bs]
    for l, p in enumerate(perms):  # hidden layer l + 1: W_l columns, b_l, W_{l+1} rows
        ws[l], bs[l], ws[l + 1] = ws[l][:, p], bs[l][p], ws[l + 1][p, :]
    return ws, bs


MODEL = gmn.GraphMetanetwork(sizes=SIZES, hidden=16, num_layers=2, out_features=3)


@functools.cache
def _run():
    """One compile: the three MLPs' graphs, their round trip, and the GMN on each."""
    ws, bs = _mlp()
    hidden = _permute_hidden(ws, bs, [RNG.permutation(n) for n in SIZES[1:-1]])
    p_in = np.array([1, 0, 3, 2])
    inputs = ([ws[0][p_in], *ws[1:]], bs)

    # random parameters from numpy: compiling Flax's init costs more than the rest here
    shapes = jax.eval_shape(lambda: MODEL.init(jax.random.key(0), gmn.mlp_parameter_graph(ws, bs)))
    params = jax.tree.map(lambda s: RNG.normal(size=s.shape).astype(np.float32) * 0.5, shapes)

    @jax.jit
    def run(nets):
        graphs = [gmn.mlp_parameter_graph(w, b) for w, b in nets]
        batch = jax.tree.map(lambda *a: jnp.stack(a), *graphs)
        out = jax.vmap(lambda g: MODEL.apply(params, g))(batch)
        return graphs[0], gmn.mlp_from_graph(graphs[0], SIZES), out

    graph, back, out = run([(ws, bs), hidden, inputs])
    return (ws, bs), hidden, graph, back, np.asarray(out)


def test_parameter_graph_round_trips():
    (ws, bs), _, g, (ws2, bs2), _ = _run()
    assert int(g.n_node[0]) == sum(SIZES) and int(g.n_edge[0]) == sum(w.size for w in ws)
    for a, b in zip(ws + bs, ws2 + bs2):
        np.testing.assert_array_equal(a, np.asarray(b))
    k = 7  # edge i -> j carries W[i, j]: check one edge by its endpoints
    i, j = int(g.senders[k]), int(g.receivers[k]) - SIZES[0]
    assert g.edges[k, 0] == ws[0][i, j]


def test_invariant_to_hidden_permutations_not_to_input_permutations():
    (ws, bs), hidden, _, _, out = _run()
    x = RNG.normal(size=(6, SIZES[0])).astype(np.float32)
    np.testing.assert_allclose(_apply(*hidden, x), _apply(ws, bs, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-5)
    assert np.abs(out[2] - out[0]).max() > 1e-3

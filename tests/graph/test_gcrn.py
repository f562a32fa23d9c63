"""GCRN model 2: K = 1 is a per-node LSTM; no information flows from the future."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from netlab.graph.gcrn import GCRN, scaled_laplacian

T, N, F, H = 4, 5, 2, 3


def graph_and_inputs():
    lap = scaled_laplacian(nx.to_numpy_array(nx.cycle_graph(N))).astype(np.float32)
    xs = np.random.default_rng(0).normal(size=(T, N, F)).astype(np.float32)
    return jnp.asarray(lap), jnp.asarray(xs)


def random_params(model, lap, xs, seed):
    """Parameters of the right shapes without compiling ``init``."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), lap, xs)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)


def test_k1_equals_an_lstm_per_node():
    lap, xs = graph_and_inputs()
    model = GCRN(hidden=H, out_features=2, K=1)
    params = random_params(model, lap, xs, 0)["params"]
    wx, b = params["cell"]["x"]["kernel"][0], params["cell"]["x"]["bias"]
    wh = params["cell"]["h"]["kernel"][0]
    cell = {}
    for j, gate in enumerate("ifgo"):
        cols = slice(j * H, (j + 1) * H)
        cell["i" + gate] = {"kernel": wx[:, cols]}
        cell["h" + gate] = {"kernel": wh[:, cols], "bias": b[cols]}
    lstm = nn.LSTMCell(H)
    ro = params["readout"]

    def reference(xs):
        carry, outs = (jnp.zeros((N, H)), jnp.zeros((N, H))), []
        for t in range(T):
            carry, h = lstm.apply({"params": cell}, carry, xs[t])
            outs.append(h @ ro["kernel"] + ro["bias"])
        return jnp.stack(outs)

    got, want = jax.jit(lambda x: (model.apply({"params": params}, lap, x), reference(x)))(xs)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_no_future_leak():
    lap, xs = graph_and_inputs()
    model = GCRN(hidden=H, out_features=1, K=3, peephole=True)
    params = random_params(model, lap, xs, 1)
    jac = jax.jit(jax.jacobian(lambda x: model.apply(params, lap, x)))(xs)  # [T,N,1,T,N,F]
    mass = np.abs(np.asarray(jac)).sum(axis=(1, 2, 4, 5))  # [t_out, t_in]
    assert np.all(mass[np.triu_indices(T, 1)] == 0)
    assert np.all(mass[np.tril_indices(T)] > 0)

"""TIDE: the spectral heat operator with k = n equals scipy's expm(−t L) per channel (L from
networkx), t = 0 is the identity, the gradient with respect to t passes check_grads and equals
−(L e^{−tL} x) summed; the host-prepared eigenpairs of a path are 1 − cos(πk/(n−1)) and padded
with zeros."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import scipy.linalg
from jax.test_util import check_grads

from netlab.graph import padding, tide


def test_heat_kernel_identity_expm_and_time_gradient():
    g = nx.gnp_random_graph(8, 0.4, seed=3)
    g.add_node(8)  # an isolated node
    e = np.array(g.edges())
    s, r = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    lam, phi = tide.laplacian_eigenpairs(s, r, 9, 9)
    lap = nx.normalized_laplacian_matrix(g, nodelist=range(9)).toarray()
    lap[8, 8] = 1.0  # networkx leaves an isolated node's row at 0; ours is I − D^-1/2 A D^-1/2
    x = np.random.default_rng(0).normal(size=(9, 3))
    t = np.array([0.3, 1.5, 4.0])
    want = np.stack([scipy.linalg.expm(-tc * lap) @ x[:, c] for c, tc in enumerate(t)], 1)
    dwant = np.stack([-(lap @ want[:, c]).sum() for c in range(3)])
    with jax.enable_x64(True):
        phi_, lam_, x_ = (jnp.asarray(v) for v in (phi, lam, x))
        f = jax.jit(lambda tt: tide.heat(phi_, lam_, x_, tt))
        out, ident = f(jnp.asarray(t)), f(jnp.zeros(3))
        dt = jax.grad(lambda tt: f(tt).sum())(jnp.asarray(t))
        check_grads(f, (jnp.asarray(t),), order=1, modes=("rev",))
        ab = tide.heat(phi_, lam_, x_, jnp.asarray(t), 0.25, 0.5)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(ident), x, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dt), dwant, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(ab), want - 0.25 * x + 0.5 * x, rtol=1e-9, atol=1e-10)


def test_prepare_graph_pads_eigenpairs():
    x = np.ones((7, 3), np.float32)
    hg = padding.from_edges(
        np.arange(6), np.arange(1, 7), 7, nodes=x, symmetrize=True, budget=padding.Budget(10, 16, 2)
    )
    hg = tide.TIDE(hidden=4, num_classes=2, k=9).prepare_graph(hg)
    phi, lam = hg.norm["tide_phi"], hg.norm["tide_lambda"]
    assert phi.shape == (10, 9) and not phi[7:].any() and not phi[:, 7:].any()
    np.testing.assert_allclose(phi[:7, :7].T @ phi[:7, :7], np.eye(7), atol=1e-5)
    # path P_7: normalised-Laplacian eigenvalues 1 − cos(πk/6), k = 0..6
    np.testing.assert_allclose(lam[:7], 1 - np.cos(np.pi * np.arange(7) / 6), atol=1e-6)

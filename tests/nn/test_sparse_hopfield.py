"""Sparse Hopfield retrieval (STanHop's GSH, Wu et al. 2024), one jitted call:

- sparsemax equals its closed form (Martins & Astudillo 2016, eq. 3 and Prop. 1: sort z, support
  size k(z) = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}, tau = (sum_{j<=k} z_(j) - 1) / k);
- entmax by bisection equals sparsemax at alpha = 2 and a numpy root of sum p(tau) = 1 at 1.5;
  its custom Jacobian equals autodiff through the sort-based sparsemax at alpha = 2;
- retrieval of well-separated patterns (Hu et al. 2023 / STanHop Thm. 3.1 setting): the sparse
  one-step error is <= the dense one for every query, and 0 when the margin beta * (<xi_mu, x> -
  max_nu <xi_nu, x>) is at least 1 (sparsemax then puts all weight on xi_mu);
- the layer is a Transformer MLP (`mlp:sparse_hopfield`), tokens independent.
"""

import flax.linen as nn
import jax
import numpy as np
from scipy import optimize

from netlab.nn import hopfield
from netlab.nn import sparse_hopfield as sh
from netlab.nn.registries import MLPS

RNG = np.random.default_rng(0)


def _sparsemax_closed_form(z):
    zs = np.sort(z)[::-1]
    cums = np.cumsum(zs)
    k = np.arange(1, len(z) + 1)
    kz = k[1 + k * zs > cums].max()
    tau = (cums[kz - 1] - 1) / kz
    return np.maximum(z - tau, 0)


def _entmax_root(z, alpha):
    s = (alpha - 1) * z.astype(np.float64)

    def excess(tau):
        return np.sum(np.maximum(s - tau, 0) ** (1 / (alpha - 1))) - 1

    tau = optimize.brentq(excess, s.max() - 1, s.max())
    return np.maximum(s - tau, 0) ** (1 / (alpha - 1))


def test_sparsemax_entmax_and_sparse_retrieval():
    z = RNG.normal(0, 1.5, size=(6, 9)).astype(np.float32)
    dz = RNG.normal(size=z.shape).astype(np.float32)
    patterns = RNG.normal(size=(16, 32)).astype(np.float32)  # random: well separated
    queries = patterns + RNG.normal(0, 0.5, size=patterns.shape).astype(np.float32)
    beta = 0.05
    layer = MLPS.get("sparse_hopfield")(num_patterns=5)
    x = RNG.normal(size=(2, 4, 8)).astype(np.float32)
    shapes = nn.unbox(jax.eval_shape(layer.init, jax.random.key(0), x))
    lv = jax.tree.map(lambda s: RNG.normal(0, 0.5, s.shape).astype(np.float32), shapes)

    @jax.jit
    def run(z, dz, lv):
        return (
            sh.sparsemax(z),
            sh.entmax(z, 2.0),
            sh.entmax(z, 1.5),
            jax.jvp(lambda z: sh.entmax(z, 2.0), (z,), (dz,))[1],
            jax.jvp(sh.sparsemax, (z,), (dz,))[1],
            sh.retrieve(queries, patterns, beta, 2.0),
            hopfield.retrieve(queries, patterns, beta),
            layer.apply(lv, x),
            layer.apply(lv, x[:, :2]),
        )

    sp, ent2, ent15, jvp_ent, jvp_sp, r_sparse, r_dense, y, y2 = run(z, dz, lv)
    for row, p in zip(z, sp):
        np.testing.assert_allclose(p, _sparsemax_closed_form(row), atol=1e-6)
    assert (sp == 0).any()  # sparse
    np.testing.assert_allclose(ent2, sp, atol=1e-5)
    for row, p in zip(z, ent15):
        np.testing.assert_allclose(p, _entmax_root(row, 1.5), atol=1e-5)
    np.testing.assert_allclose(jvp_ent, jvp_sp, atol=1e-5)

    err = {
        name: np.linalg.norm(r - patterns, axis=-1)
        for name, r in (("sparse", r_sparse), ("dense", r_dense))
    }
    scores = beta * queries @ patterns.T
    own = np.diag(scores)
    margin = own - np.where(np.eye(16, dtype=bool), -np.inf, scores).max(1)
    assert (margin > 0).all() and (margin >= 1).any() and (margin < 1).any()
    assert (err["sparse"] <= err["dense"] + 1e-6).all()
    np.testing.assert_allclose(err["sparse"][margin >= 1], 0.0, atol=1e-5)
    assert (err["dense"][margin >= 1] > 1e-3).all()  # the softmax does not reach the pattern
    # as a Transformer MLP: (..., embed) -> (..., embed), each token on its own
    assert y.shape == x.shape
    np.testing.assert_allclose(y2, y[:, :2], atol=1e-5)

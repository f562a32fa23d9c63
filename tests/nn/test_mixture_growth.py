"""MixtureGrowth (Pham et al. 2024): growing keeps the templates and the old blocks, so the grown
layer computes the old function on zero-padded inputs; new blocks are combinations of the same
learned templates ("copy": a learned block reused; "random": still in the templates' span), and
growth adds coefficients only."""

import jax
import numpy as np

from netlab.nn import mixture_growth as mg

RNG = np.random.default_rng(0)
D_IN, F, K = 4, 6, 3


def test_growth_preserves_function_and_reuses_templates():
    small, big = mg.TemplateDense(F, K, grid=1), mg.TemplateDense(2 * F, K, grid=2)
    x = RNG.normal(size=(5, D_IN)).astype(np.float32)
    params = jax.tree.map(
        lambda s: RNG.normal(size=s.shape).astype(np.float32),
        jax.eval_shape(small.init, jax.random.key(0), x),
    )
    padded = np.concatenate([x, np.zeros_like(x)], axis=-1)

    @jax.jit
    def run(params):  # one compile: growth, both grown layers, the assembled kernels
        p = params["params"]
        grown = {i: mg.grow(p, 2, i, jax.random.key(1)) for i in mg.INITS}
        outs = [big.apply({"params": grown[i]}, padded)[:, :F] for i in mg.INITS]
        kernels = [mg.assemble(q["templates"], q["coefficients"]) for q in (p, *grown.values())]
        return small.apply(params, x), outs, grown, kernels

    old, new, grown, (w_old, w_copy, w_rand) = jax.tree.map(np.asarray, run(params))
    for out in new:
        np.testing.assert_allclose(out, old, rtol=1e-5, atol=1e-5)
    p, g = params["params"], grown["copy"]
    np.testing.assert_array_equal(g["templates"], p["templates"])
    n_old, n_new = (sum(a.size for a in jax.tree.leaves(t)) for t in (p, g))
    assert n_new - n_old == (4 - 1) * K + F  # new coefficients and biases, no templates
    for i in range(2):
        for j in range(2):
            block = w_copy[i * D_IN : (i + 1) * D_IN, j * F : (j + 1) * F]
            np.testing.assert_allclose(block, w_old, rtol=1e-5, atol=1e-6)
    basis = np.asarray(p["templates"]).reshape(K, -1).T  # (D_IN * F, K)
    block = w_rand[D_IN:, F:].reshape(-1)
    coef, *_ = np.linalg.lstsq(basis, block, rcond=None)
    np.testing.assert_allclose(basis @ coef, block, atol=1e-4)
    assert np.abs(block - w_old.reshape(-1)).max() > 1e-2  # random is not a copy

"""The RevCol and i-RevNet DiT trunks (netlab/nn/revcol_dit.py, netlab/nn/irevnet_dit.py;
`model.trunk=revcol|irevnet`): the inverses reconstruct (RevCol: every column from the last one,
down to column 0's zero input; i-RevNet: the trunk's input from its output), the recomputing
backward's gradient (parameters, input, conditioning) equals ordinary backprop through the same
network with random parameters (nonzero adaLN gates), DiT holds the trunk in place of its blocks,
and bad trunk settings are one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import dit
from netlab.errors import UserError
from netlab.nn import irevnet_dit, revcol_dit

RNG = np.random.default_rng(0)
H, W = RNG.normal(size=(2, 2, 5, 16))  # float64 (under jax.enable_x64 in the test)
C = RNG.normal(size=(2, 16))
F64 = jnp.float64
MODELS = {
    "revcol": lambda rev: revcol_dit.RevColDiTStack(16, 2, 2, 2, 32, dtype=F64, reversible=rev),
    "irevnet": lambda rev: irevnet_dit.IRevNetDiTStack(16, 2, 2, 16, F64, reversible=rev),
}


def _noisy(model):
    shapes = jax.eval_shape(model.init, jax.random.key(0), H, C)["params"]
    # gates and weights random (0.3); RevCol's gammas near 1 (the inverse divides by them)
    return {
        k: jax.tree.map(
            lambda s, g="gamma" in k: (1.0 if g else 0.0) + RNG.normal(0, 0.3, s.shape), v
        )
        for k, v in shapes.items()
    }


@jax.jit
def _run(params):
    out = {}
    for name, make in MODELS.items():
        rev, plain = make(True), make(False)

        def loss(model):
            return lambda p, h, c: jnp.sum(jnp.sin(model.apply({"params": p}, h, c)) * W)

        grads = [jax.grad(loss(m), argnums=(0, 1, 2))(params[name], H, C) for m in (rev, plain)]
        if name == "revcol":
            cols = rev.apply({"params": params[name]}, H, C, recover=True)
            back = cols[0], jnp.abs(jnp.stack(cols[-1])).max()
        else:
            y = rev.apply({"params": params[name]}, H, C)
            back = rev.apply({"params": params[name]}, y, C, inverse=True)
        out[name] = grads, back
    return out


def test_inverse_reconstructs_and_gradients_equal_backprop():
    # float64: the reconstruction by subtraction (and RevCol's division by gamma) is then exact
    # to ~1e-12, so any error of the recomputing backward would show
    with jax.enable_x64(True):
        out = jax.tree.map(np.asarray, _run({n: _noisy(m(True)) for n, m in MODELS.items()}))
    (g_rev, g_plain), (zeros, top) = out["revcol"]
    assert top > 10  # the levels grow through the columns: errors relative to the last one
    for level in zeros:  # column 0's previous column, recovered through both columns
        np.testing.assert_allclose(level, 0.0, atol=1e-12 * top)
    (gi_rev, gi_plain), back = out["irevnet"]
    np.testing.assert_allclose(back, H, atol=1e-12)
    for a_tree, b_tree in ((g_rev, g_plain), (gi_rev, gi_plain)):
        paths = jax.tree_util.tree_leaves_with_path(a_tree)
        scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(b_tree))
        for (path, a), b in zip(paths, jax.tree.leaves(b_tree)):
            assert a.dtype == np.float64
            assert np.abs(b).max() > 0 or "col0_gamma" in str(path), path  # column 0: gamma * 0
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11 * scale, err_msg=str(path))


def test_dit_holds_the_trunk_and_bad_settings_are_one_line():
    kw = dict(image_size=8, channels=1, patch=2, width=16, depth=4, num_heads=2, num_classes=10)
    x, t, y = jnp.zeros((2, 8, 8, 1)), jnp.zeros(2), jnp.zeros(2, jnp.int32)
    for trunk in ("revcol", "irevnet"):
        names = jax.eval_shape(dit.DiT(trunk=trunk, **kw).init, jax.random.key(0), x, t, y)
        assert trunk in names["params"], trunk
        assert not any(k.startswith("block") for k in names["params"])
    m = dict(depth=3, width=16, num_heads=2, patch=2)
    cases = [
        (dict(trunk="irevnt"), r"model.trunk='irevnt'.*did you mean 'irevnet'"),
        (dict(trunk="revcol"), r"model.depth=3 must be a multiple of .* = 2"),
        (dict(trunk="irevnet", num_heads=16), r"model.num_heads=16 must divide"),
        (dict(trunk="revcol", levels=0), r"model.levels=0: expected an integer >= 1"),
    ]
    for extra, pattern in cases:
        with pytest.raises(UserError, match=pattern) as e:
            dit.build({**m, **extra}, data_shape=(8, 8, 1), num_classes=10, policy=None)
        assert "\n" not in str(e.value)

"""The reversible DiT trunk (netlab/nn/rev_dit.py, `model.trunk="reversible"`): the gradient of
the recomputing backward (parameters, input and conditioning) equals ordinary backprop through
the same coupled network (random parameters, so the adaLN-Zero gates are not zero); the fresh
trunk is the identity; the DiT holds it in place of its blocks; a bad trunk is one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion.dit import DiT
from netlab.errors import UserError
from netlab.nn import rev_dit

KW = dict(image_size=8, channels=1, patch=2, width=16, depth=2, num_heads=2, num_classes=10)


def test_reversible_gradient_equals_ordinary_backprop_and_init_is_identity():
    rev = rev_dit.ReversibleDiTStack(16, 2, 3, 32)
    plain = rev_dit.ReversibleDiTStack(16, 2, 3, 32, reversible=False)
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 16)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
    params = rev.init(jax.random.key(0), h, c)["params"]
    leaves, treedef = jax.tree.flatten(params)
    noisy = treedef.unflatten(
        [p + 0.3 * jnp.asarray(rng.normal(size=p.shape), p.dtype) for p in leaves]
    )

    @jax.jit
    def run(params, noisy):
        def loss(model):
            return lambda p, h, c: jnp.sum(model.apply({"params": p}, h, c) * weights)

        grads = [jax.grad(loss(m), argnums=(0, 1, 2))(noisy, h, c) for m in (rev, plain)]
        return grads, rev.apply({"params": params}, h, c)

    (g_rev, g_plain), fresh = run(params, noisy)
    np.testing.assert_allclose(fresh, h, atol=1e-6)  # adaLN-Zero: gates 0, streams' mean = h
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_rev), jax.tree.leaves(g_plain)):
        scale = float(jnp.abs(b).max())
        assert scale > 0, path
        # float32 reconstruction by subtraction: errors relative to the leaf's largest entry
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale, err_msg=str(path))
    # the DiT with model.trunk="reversible" holds the stack in place of its blocks
    dit = DiT(trunk="reversible", **KW)
    x, t, y = jnp.zeros((2, 8, 8, 1)), jnp.zeros(2), jnp.zeros(2, jnp.int32)
    names = jax.eval_shape(dit.init, jax.random.key(0), x, t, y)["params"]
    assert "rev_blocks" in names and not any(k.startswith("block") for k in names)


def test_bad_trunk_is_one_line():
    from netlab.diffusion import dit

    m = dict(depth=2, width=16, num_heads=2, patch=2, trunk="revers")
    with pytest.raises(UserError, match=r"model.trunk='revers'.*did you mean 'reversible'") as e:
        dit.build(m, data_shape=(8, 8, 1), num_classes=10, policy=None)
    assert "\n" not in str(e.value)

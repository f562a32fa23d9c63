"""train.remat: the rematerialisation policies (offload to host included) give the loss and the
gradients of no remat on a tiny DiT, and an unknown policy is a one-line UserError."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion.dit import DiT
from netlab.errors import UserError
from netlab.nn import precision

# dots_no_batch saves what offload saves, on the device: offload covers it (one compile less)
CASES = ("none", "full", "dots", "offload")


def test_remat_policies_match_no_remat():
    def model(name):
        policy = precision.Policy(remat=name).remat_policy
        return DiT(
            image_size=4,
            channels=2,
            patch=2,
            width=8,
            depth=1,
            num_heads=2,
            num_classes=3,
            remat_policy=policy,
        )

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 2)), jnp.float32)
    t = jnp.asarray([0.3, -1.2], jnp.float32)
    y = jnp.asarray([0, 2])
    params = jax.jit(model("none").init)(jax.random.key(0), x, t, y)["params"]
    # adaLN-Zero starts every block as the identity: perturb so the blocks' gradients are nonzero
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = tree.unflatten([p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])

    @jax.jit  # one compiled program holds every policy's forward + backward
    def all_policies(params):
        out = {}
        for name in CASES:
            m = model(name)
            out[name] = jax.value_and_grad(
                lambda p, m=m: jnp.mean(m.apply({"params": p}, x, t, y) ** 2)
            )(params)
        return out

    # offload really moves the saved matmul outputs to host memory (residuals placed on the host)
    offload = model("offload")
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: offload.apply({"params": p}, x, t, y).sum()))(params)
    assert "MemorySpace.Host" in str(jaxpr)
    out = all_policies(params)
    loss0, grad0 = out["none"]
    assert float(loss0) > 0
    g0 = jax.tree.leaves(grad0)
    assert sum(float(jnp.abs(g).sum()) for g in g0) > 0
    for name in CASES[1:]:
        loss, grad = out[name]
        np.testing.assert_allclose(loss, loss0, rtol=1e-6, err_msg=name)
        for a, b in zip(jax.tree.leaves(grad), g0):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)


def test_unknown_remat_policy_is_a_one_line_error():
    with pytest.raises(UserError) as e:
        precision.remat_policy("offlaod")
    msg = str(e.value)
    assert "\n" not in msg and "train.remat='offlaod'" in msg
    assert all(name in msg for name in precision.REMAT)

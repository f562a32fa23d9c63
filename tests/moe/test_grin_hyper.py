"""SparseMixer-v2 (GRIN) selection/gradient rules and HyperRouter's frozen hypernetwork."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.moe.hyper_router import hypernetwork
from netlab.moe.layer import MoEMLP
from netlab.moe.sparsemixer import sparsemixer_v2_select

Z = jnp.array([[5.0, 4.9, 0.0, 4.5], [1.0, -2.0, 0.95, 0.2]])


def test_sparsemixer_eval_is_argmax_and_masked_experts_are_never_sampled():
    _, idx, w = sparsemixer_v2_select(Z, 1, None, train=False)
    np.testing.assert_array_equal(idx[:, 0], [0, 0])
    # token 0: (5-0)/5 = 1 > 0.2 masks expert 2; (5-4.5)/5 = 0.1 keeps expert 3
    pi0 = np.exp([5.0, 4.9, 4.5]) / np.exp([5.0, 4.9, 4.5]).sum()
    np.testing.assert_allclose(w[0, 0], pi0[0], rtol=1e-6)
    draws = jax.jit(jax.vmap(lambda r: sparsemixer_v2_select(Z, 2, r, True)[1:]))(
        jax.random.split(jax.random.key(0), 400)
    )
    idx, w = np.asarray(draws[0]), np.asarray(draws[1])
    assert not (idx[:, 0, 0] == 2).any()  # masked in the first pick
    assert set(np.unique(idx[:, 0, 0])) == {0, 1, 3}  # the others are all sampled
    assert (idx[..., 0] != idx[..., 1]).all()  # second pick differs from the first
    # forward weight is pi_e * omega with omega in {1, 1/3}; non-argmax picks get 1/3 ~3/4 of the
    # time
    pi = {0: pi0[0], 1: pi0[1], 3: pi0[2]}
    w0 = np.array([w[i, 0, 0] / pi[idx[i, 0, 0]] for i in range(len(idx))])
    assert np.all(np.isclose(w0, 1.0) | np.isclose(w0, 1 / 3, rtol=1e-5))
    non_best = idx[:, 0, 0] != 0
    frac = np.isclose(w0[non_best], 1 / 3, rtol=1e-5).mean()
    assert 0.6 < frac < 0.9
    assert np.all(np.isclose(w0[~non_best], 1.0))


def test_sparsemixer_gradient_is_that_of_the_masked_softmax():
    rng = jax.random.key(3)
    f = lambda z: sparsemixer_v2_select(z, 1, rng, True)[2][:, 0].sum()
    g = jax.grad(f)(Z)
    e = sparsemixer_v2_select(Z, 1, rng, True)[1][:, 0]
    mask = jnp.array(
        [[False, False, True, False], [False, True, False, True]]
    )  # (1+2)/1, (1-0.2)/1 > 0.2

    def ref(z):
        pi = jax.nn.softmax(jnp.where(mask, -jnp.inf, z), -1)
        return jnp.take_along_axis(pi, e[:, None], -1).sum()

    np.testing.assert_allclose(g, jax.grad(ref)(Z), atol=1e-6)
    assert float(jnp.abs(g).max()) > 0


def test_sparsemixer_rejects_k3():
    with pytest.raises(ValueError, match="k=1 or k=2"):
        sparsemixer_v2_select(Z, 3, None, False)


def test_hyper_router_trains_only_the_embedding_through_a_fixed_hypernetwork():
    m = MoEMLP(num_experts=4, hidden=8, k=2, router="hyper", hyper_dim=6, capacity_factor=None)
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    params = nn.unbox(jax.jit(m.init)(jax.random.key(2), x)["params"])
    assert "router" not in params and params["hyper_embed"].shape == (6,)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x) ** 2)))(params)
    assert float(jnp.abs(grads["hyper_embed"]).max()) > 0
    # the hypernetwork is a fixed function: same embedding -> same router, different embedding ->
    # different router
    wr, br = hypernetwork(params["hyper_embed"], 8, 4, 6)
    wr2, _ = hypernetwork(params["hyper_embed"], 8, 4, 6)
    np.testing.assert_array_equal(wr, wr2)
    assert wr.shape == (4, 8) and br.shape == (4,)
    assert float(jnp.abs(hypernetwork(params["hyper_embed"] + 1.0, 8, 4, 6)[0] - wr).max()) > 1e-3

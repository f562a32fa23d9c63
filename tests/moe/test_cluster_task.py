"""Chen et al. 2022's cluster task (netlab/moe/cluster_task.py): the generator's patches, and the
constructive claim behind the paper's result: with the router on the cluster centres and one
cluster's signal per expert the MoE is (nearly) error-free, while one expert holding the same
signal filters is fooled by the feature noise. Training is bench/moe_cluster.py."""

import jax.numpy as jnp
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.moe import cluster_task as C

K, D = 4, 50


def test_patches_are_signal_centre_and_feature_noise():
    rng = np.random.default_rng(0)
    data, basis = C.make_data(rng, 500, k=K, p=3, d=D)  # p = 3: no Gaussian patch, exact
    v, c, x, k = basis["v"], basis["c"], data["x"].astype(np.float64), data["cluster"]
    np.testing.assert_allclose(
        np.concatenate([v, c]) @ np.concatenate([v, c]).T, np.eye(2 * K), atol=1e-12
    )
    on_v = np.einsum("npd,kd->nkp", x, v)  # (n, K, P)
    on_c = np.einsum("npd,kd->nkp", x, c).sum(-1)
    own = on_v.sum(-1)[np.arange(len(k)), k]  # alpha * y
    assert np.all(np.sign(own) == data["y"]) and np.all(
        (np.abs(own) >= 0.5 - 1e-6) & (np.abs(own) <= 2 + 1e-6)
    )
    beta = on_c[np.arange(len(k)), k]
    assert np.all((beta >= 1 - 1e-6) & (beta <= 2 + 1e-6))
    assert np.abs(on_c).sum(1) == pytest.approx(beta, abs=1e-5)  # no other centre
    noise = np.abs(on_v.sum(-1)).sum(1) - np.abs(own)  # exactly one other signal, |gamma|
    assert np.all((noise >= 0.5 - 1e-5) & (noise <= 3 + 1e-5))
    with pytest.raises(UserError, match="d >= 2k"):
        C.make_data(rng, 5, k=K, d=7)


def test_cluster_router_with_one_expert_per_cluster_beats_one_expert():
    rng = np.random.default_rng(1)
    data, basis = C.make_data(rng, 1000, k=K, p=4, d=D)
    moe = {"w": jnp.asarray(basis["v"][:, None]), "theta": jnp.asarray(10 * basis["c"])}
    single = {"w": jnp.asarray(basis["v"][None]), "theta": jnp.zeros((1, D))}
    got, got_single = C.evaluate(moe, data, K), C.evaluate(single, data, K)
    assert got["agreement"] == 1.0 and got["distinct_experts"] == K
    assert got["error"] < 0.01 and got_single["error"] > 0.1

"""RADD (netlab/diffusion/radd.py) on an exactly solvable case: a known joint law over sequences of
length 3 with K = 3 tokens, enumerated. Float64."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import discrete, radd


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


K, L, MASK = 3, 3, 3
X0 = np.array(list(itertools.product(range(K), repeat=L)))  # (27, L) every clean sequence
XT = np.array(list(itertools.product(range(K + 1), repeat=L)))  # (64, L) every noisy sequence
P0 = np.random.default_rng(0).dirichlet(np.full(len(X0), 0.5))  # a correlated joint law


def _conditionals(xt):
    """p_0(x^i = v | x^{UM} = x_t^{UM}) (L, K) by summing the joint over consistent sequences."""
    um = xt != MASK
    consistent = (X0[:, um] == xt[um]).all(1)
    w = P0 * consistent
    out = np.stack([np.bincount(X0[:, i], weights=w, minlength=K) for i in range(L)])
    return out / w.sum()


def _q_t(y, alpha):
    """The forward marginal q_t(y) = sum_x0 p(x0) prod_i k(y^i | x0^i), mask w.p. 1 - alpha."""
    k = np.where(y == MASK, 1 - alpha, np.where(X0 == y, alpha, 0.0))  # (27, L)
    return float(P0 @ k.prod(1))


def test_concrete_score_is_time_factor_times_clean_conditionals():
    """Theorem 1: q_t(x_t with masked i set to v) / q_t(x_t) equals alpha/(1 - alpha) times
    p_0(x^i = v | x_t^{UM}), for every x_t with a mask, every masked i, v and three times."""
    alphas = np.array([0.1, 0.5, 0.93])
    masked = XT[(XT == MASK).any(1)]
    cond = np.stack([_conditionals(x) for x in masked])  # (n, L, K), time-free
    got = jax.jit(jax.vmap(radd.concrete_score, (None, None, 0, None)), static_argnums=3)(
        cond, masked, jnp.broadcast_to(alphas[:, None], (3, len(masked))), MASK
    )
    got = np.asarray(got)
    for a, alpha in enumerate(alphas):
        for n, x in enumerate(masked):
            base = _q_t(x, alpha)
            for i in np.flatnonzero(x == MASK):
                for v in range(K):
                    y = x.copy()
                    y[i] = v
                    assert got[a, n, i, v] == pytest.approx(_q_t(y, alpha) / base, rel=1e-12)
            assert (got[a, n, x != MASK] == 0).all()
    # the factor carries all the time dependence: the ratio of scores at two times is constant
    ratio = got[0][masked == MASK] / got[1][masked == MASK]
    np.testing.assert_allclose(ratio, radd.score_factor(0.1) / radd.score_factor(0.5), rtol=1e-12)


def test_masked_elbo_with_exact_conditionals_is_the_exact_nll():
    """With the exact clean-data conditionals the continuous masked ELBO (lambda-DCE) is tight:
    int_0^1 E_mask[(1/lambda) sum_masked -log p_0(x^i | x^{UM})] dlambda = -log p(x0) for every
    x0 (the any-order autoregressive identity). The expectation over the 2^L mask patterns is
    enumerated and the integrand is a polynomial of degree L - 1 in lambda, so L Gauss-Legendre
    nodes integrate it exactly. A wrong loss weight breaks the equality."""
    patterns = np.array(list(itertools.product([False, True], repeat=L)))  # True = masked
    xt = np.where(patterns[None], MASK, X0[:, None])  # (27, 8, L)
    logits = np.log(np.stack([[_conditionals(x) for x in row] for row in xt]) + 1e-300)
    nodes, weights = np.polynomial.legendre.leggauss(L)
    lams = (nodes + 1) / 2

    def elbo(x0, xt, logits):
        def at(lam):
            alpha, dalpha = discrete.linear_alpha(lam)
            n = patterns.sum(1)
            prob = lam**n * (1 - lam) ** (L - n)  # P(this mask pattern)
            loss = discrete.masked_loss(x0, xt, logits, alpha, dalpha, MASK)
            return jnp.sum(prob * loss)

        return jnp.dot(weights / 2, jax.vmap(at)(jnp.asarray(lams)))

    got = jax.jit(jax.vmap(lambda a, b, c: elbo(a[None], b, c)))(X0, xt, logits)
    np.testing.assert_allclose(got, -np.log(P0), rtol=1e-10)
    # nelbo's quadrature + mask draws: a uniform predictor costs log K per token in expectation
    x0 = jnp.zeros((512, 8), jnp.int32)
    uniform = jax.jit(
        lambda k: radd.nelbo(lambda x: jnp.full((*x.shape, K), -np.log(K)), k, x0, MASK, 4)
    )(jax.random.key(0))
    assert float(uniform.mean()) == pytest.approx(8 * np.log(K), rel=0.03)


def test_caching_sampler_equals_uncached_with_fewer_network_calls():
    """A tiny random time-free network; the same key with the cache on and off gives identical
    samples, and the cached run calls the network less often (counted inside the sampler)."""
    net = radd.RADDNet(vocab=5, width=16, depth=1, num_heads=2, max_len=8, dtype=jnp.float64)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    rng = np.random.default_rng(0)  # random weights from numpy: no init program to compile
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape)), shapes)
    apply = functools.partial(net.apply, params)

    @jax.jit
    def run(cache):
        return radd.sample(apply, jax.random.key(1), 3, 4, 24, mask_id=5, cache=cache)

    x_cached, calls_cached = run(True)
    x_plain, calls_plain = run(False)
    np.testing.assert_array_equal(x_cached, x_plain)
    assert int(calls_plain) == 24 and 1 <= int(calls_cached) < 24
    assert ((np.asarray(x_cached) >= 0) & (np.asarray(x_cached) < 5)).all()  # all revealed
    assert int(calls_cached) <= 1 + 3 * 4  # at most one call per reveal event, plus the first


def test_text_config_builds_and_reads_the_moe_lm_bytes():
    """The byte config builds its task, its loss traces to a scalar (not compiled), its text is the
    MoE byte LM's byte for byte, and a bad value is a one-line UserError."""
    from netlab import configlib
    from netlab.diffusion.radd_task import RADDText, load_text
    from netlab.errors import UserError
    from netlab.moe import text

    for a, b in zip(load_text(0.1), text.load(0.1)):
        np.testing.assert_array_equal(a, b)
    over = {"model.width": "16", "train.batch_size": "2", "data.seq_len": "8"}
    task = RADDText(configlib.load("configs/diffusion/radd_text.py:cpu", overrides=over))
    variables = jax.eval_shape(task.init_variables, jax.random.key(0))
    batch = task.train_batch(0)
    assert batch["tokens"].shape == (2, 8) and batch["tokens"].max() < 256
    loss, (metrics, _) = jax.eval_shape(
        task.loss_fn, variables["params"], {}, batch, jax.random.key(0), True
    )
    assert loss.shape == () and set(metrics) == {"dce_per_byte"}
    with pytest.raises(UserError, match="diffusion.sample_steps"):
        over["diffusion.sample_steps"] = "0"
        RADDText(configlib.load("configs/diffusion/radd_text.py:cpu", overrides=over))

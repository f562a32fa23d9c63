"""D3PM / masked diffusion (netlab/diffusion/discrete.py, discrete_samplers.py) against numpy
transcriptions, brute-force Bayes by enumeration, and the discrete-to-continuous ELBO identity.
Everything in float64 on tiny K."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import discrete, discrete_samplers


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


T = 6


def _processes():
    rng = np.random.default_rng(0)
    cos = discrete.cosine_alpha_bar(T)
    return {
        "uniform": discrete.uniform(4, cos),
        "absorbing": discrete.absorbing(3, discrete.linear_alpha_bar(T)),
        "marginal": discrete.marginal_preserving(rng.dirichlet(np.ones(4)), cos),
    }


def _one_step_products(qs):
    """[I, Q_1, Q_1 Q_2, ...]: numpy products of the one-step matrices qs (T, K, K)."""
    out = [np.eye(qs.shape[-1])]
    for Q in qs:
        out.append(out[-1] @ Q)
    return out


def test_matrices_are_stochastic_and_qbar_is_the_product():
    """Every Q_t and Qbar_t is row-stochastic, the closed-form Qbar_t is the product of the one-step
    matrices, and the marginal-preserving process keeps its (non-uniform) marginal at every t."""
    procs = _processes()
    ts = jnp.arange(1, T + 1)
    x0 = {n: np.random.default_rng(0).dirichlet(np.ones(p.num_states), 3) for n, p in procs.items()}

    def mats(proc, x0):
        def at(t):
            return proc.q_matrix(t), proc.qbar_matrix(t), proc.marginal(x0, t)

        return jax.vmap(at)(ts)

    out = jax.jit(lambda x0: {n: mats(p, x0[n]) for n, p in procs.items()})(x0)
    for name, (q, qbar, marg) in out.items():
        prods = np.stack(_one_step_products(np.asarray(q)))
        for M in (np.asarray(q), np.asarray(qbar)):
            assert (M >= 0).all()
            np.testing.assert_allclose(M.sum(-1), 1.0, atol=1e-14)
        np.testing.assert_allclose(qbar, prods[1:], atol=1e-14)
        np.testing.assert_allclose(marg, x0[name] @ prods[1:], atol=1e-14)
        m = np.asarray(procs[name].m)
        if name == "absorbing":  # linear absorption: absorbed by t with probability t / T
            np.testing.assert_allclose(prods[T][:, -1], 1.0, atol=1e-14)
            np.testing.assert_allclose(prods[2][0, -1], 2 / T, atol=1e-14)
        if name == "marginal":
            assert not np.allclose(m, m.mean())  # non-uniform, so the check has teeth
            np.testing.assert_allclose(m @ prods, np.broadcast_to(m, (T + 1, len(m))), atol=1e-15)
            uni = np.stack(_one_step_products(np.asarray(out["uniform"][0])))
            assert not np.allclose(m @ uni[T], m, atol=1e-3)  # the uniform process does not


def _bayes(prods, t):
    """post[x0, x_t, x_prev] = Q_t[x_prev, x_t] Qbar_{t-1}[x0, x_prev] / Qbar_t[x0, x_t]."""
    Q = np.linalg.solve(prods[t - 1], prods[t])  # Q_t from the products
    K = len(Q)
    post = np.full((K, K, K), np.nan)
    for x0, xt in itertools.product(range(K), range(K)):
        den = prods[t][x0, xt]
        if den > 0:
            post[x0, xt] = [Q[j, xt] * prods[t - 1][x0, j] / den for j in range(K)]
    return post


def _numpy_q(proc):
    """D3PM's one-step matrices (T, K, K) transcribed: (1 - beta_t) I + beta_t 1 m^T."""
    ab, m = np.asarray(proc.alpha_bar), np.asarray(proc.m)
    beta = 1 - ab[1:] / ab[:-1]
    return (1 - beta)[:, None, None] * np.eye(len(m)) + beta[:, None, None] * m


def _exact(proc, name):
    """Brute-force Bayes on the one-step products: the posterior, q(x0 | x_t), q(x_{t-1} | x_t)."""
    K, prods = proc.num_states, _one_step_products(_numpy_q(proc))
    p0 = np.random.default_rng(1).dirichlet(np.ones(K))  # a data law over the states
    if name == "absorbing":
        p0[-1] = 0.0
        p0 /= p0.sum()
    ts = np.arange(2, T + 1)
    joint = p0[None, :, None] * np.stack([prods[t] for t in ts])  # (t, x0, x_t)
    q_xt = joint.sum(1)  # (t, x_t)
    safe = np.where(q_xt > 0, q_xt, 1.0)
    x0_given_xt = np.swapaxes(joint / safe[:, None], 1, 2)  # (t, x_t, x0)
    prev = np.stack([p0 @ prods[t - 1] for t in ts])  # (t, x_prev)
    onestep = np.stack([np.linalg.solve(prods[t - 1], prods[t]) for t in ts])  # (t, prev, x_t)
    reverse = np.swapaxes(prev[:, :, None] * onestep, 1, 2) / safe[:, :, None]  # (t, x_t, prev)
    post = np.stack([_bayes(prods, t) for t in ts])  # (t, x0, x_t, prev)
    return x0_given_xt, reverse, post, q_xt > 0


def test_posterior_and_reverse_model_equal_brute_force_bayes():
    procs = _processes()
    exact = {n: _exact(p, n) for n, p in procs.items()}
    ts = jnp.arange(2, T + 1)

    def at(proc, t, pred):
        K = proc.num_states
        x0s, xts = jnp.meshgrid(jnp.arange(K), jnp.arange(K), indexing="ij")
        onehot = jax.nn.one_hot(x0s, K, dtype=jnp.float64)
        out = {f: discrete.p_prev(proc, jnp.arange(K), pred, t, f) for f in discrete.FORMS}
        out["post"] = discrete.posterior(proc, xts, onehot, t)
        for f in discrete.FORMS:
            out["onehot_" + f] = discrete.p_prev(proc, xts, onehot, t, f)
            out["vb_" + f] = discrete.vb_term(proc, x0s, xts, t, onehot, f)
        return out

    def run(preds):
        return {n: jax.vmap(lambda t, q, p=p: at(p, t, q))(ts, preds[n]) for n, p in procs.items()}

    got = jax.jit(run)({n: e[0] for n, e in exact.items()})
    for name, (_, reverse, want, reach) in exact.items():
        g = {k: np.asarray(v) for k, v in got[name].items()}
        ok, reach = ~np.isnan(want), np.broadcast_to(reach[..., None], reverse.shape)
        np.testing.assert_allclose(g["post"][ok], want[ok], atol=1e-12)
        np.testing.assert_allclose(g["marginal"][reach], reverse[reach], atol=1e-12)
        if name == "absorbing":  # q(x_t = mask | x0) is the same for every x0: the forms agree
            np.testing.assert_allclose(g["d3pm"][reach], reverse[reach], atol=1e-12)
        else:  # eq. 4 also weighs each x0 by q(x_t | x0): not the exact reverse
            assert np.abs(g["d3pm"][reach] - reverse[reach]).max() > 1e-4
        for f in discrete.FORMS:  # one-hot predictions: the posterior, and a zero L_vb term
            np.testing.assert_allclose(g["onehot_" + f][ok], want[ok], atol=1e-12)
            np.testing.assert_allclose(g["vb_" + f][ok.any(-1)], 0.0, atol=1e-12)


def test_absorbing_vb_is_the_riemann_sum_of_the_masked_elbo():
    """Absorbing process, alpha_bar_t = 1 - t/T, length-2 sequences over K = 3 tokens and a model
    p(x0^i | x_t) that depends on the whole x_t (a random table, mask probability zero). By
    enumeration of x_t: sum_t E[sum_i L_vb term] + prior KL equals (1/T) sum_{t=1..T} of the
    expected continuous masked-diffusion integrand at s = t/T with alpha(s) = 1 - s. A wrong
    posterior, reverse model, KL or loss weight breaks the equality."""
    K, L, steps = 3, 2, 7
    proc = discrete.absorbing(K, discrete.linear_alpha_bar(steps))
    xt = jnp.asarray(list(itertools.product(range(K + 1), repeat=L)))  # every x_t
    x0s = jnp.asarray(list(itertools.product(range(K), repeat=L)))  # every x_0
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(len(xt), L, K)))
    probs = jax.nn.softmax(logits)
    probs = jnp.concatenate([probs, jnp.zeros((*probs.shape[:-1], 1))], -1)  # + mask column

    def per_step(x0, t):
        q_xt = jnp.prod(proc.marginal(jax.nn.one_hot(x0, K + 1), t)[jnp.arange(L), xt], -1)
        x0b = jnp.broadcast_to(x0, xt.shape)
        vb = jnp.sum(q_xt * discrete.vb_term(proc, x0b, xt, t, probs).sum(-1))
        alpha, dalpha = discrete.linear_alpha(jnp.full((len(xt),), t / steps))
        cont = jnp.sum(q_xt * discrete.masked_loss(x0b, xt, logits, alpha, dalpha, K)) / steps
        return vb, cont

    def per_x0(x0):
        vb, riemann = jax.vmap(per_step, (None, 0))(x0, jnp.arange(1, steps + 1))
        return discrete.prior_kl(proc, x0).sum() + vb.sum(), riemann.sum()

    def hybrid(x0):  # D3PM hybrid loss: L_vb term + lambda CE(x0), here at t = 3
        x0b = jnp.broadcast_to(x0, xt.shape)
        full = jnp.concatenate([logits, jnp.full((*logits.shape[:-1], 1), -jnp.inf)], -1)
        return discrete.hybrid_loss(proc, x0b, xt, 3, full, 0.5), discrete.vb_term(
            proc, x0b, xt, 3, probs
        )

    (vb, riemann), (hyb, vb3) = jax.jit(lambda x: (jax.vmap(per_x0)(x), jax.vmap(hybrid)(x)))(x0s)
    np.testing.assert_allclose(vb, riemann, rtol=1e-12)
    assert (np.asarray(vb) > 0.1).all()
    lsm = np.asarray(jax.nn.log_softmax(logits))[None]  # (1, x_t, L, K)
    logp = np.take_along_axis(lsm, np.asarray(x0s)[:, None, :, None], -1)[..., 0]
    np.testing.assert_allclose(hyb, np.asarray(vb3) - 0.5 * logp, rtol=1e-12)


def test_samplers_with_the_exact_predictor_reproduce_the_data_law():
    """Tokens i.i.d. from p0: the exact p(x0^i | x_t) is per position (Bayes on Qbar_t), so the
    uniform process's ancestral sampler and the absorbing process's tau-leaping both return
    draws from p0 (4096 tokens each; 5-sigma bounds on the frequencies)."""
    p0 = jnp.array([0.6, 0.3, 0.1])
    proc = discrete.uniform(3, discrete.cosine_alpha_bar(8))

    def predict(xt, t):  # p(x0 | x_t) ∝ p0(x0) Qbar_t[x0, x_t]
        return discrete._normalise(p0 * proc.qbar_matrix(t)[:, xt].T)

    def predict_masked(xt, t):
        return jnp.broadcast_to(p0, (*xt.shape, 3))

    @jax.jit
    def draw(key):
        a = discrete_samplers.ancestral(proc, predict, key, (64, 64))
        b = discrete_samplers.tau_leaping(predict_masked, key, 64, 64, 5, mask_id=3)
        return a, b

    n = 64 * 64
    for x in draw(jax.random.key(0)):
        freq = np.bincount(np.asarray(x).ravel(), minlength=4) / n
        assert freq[3] == 0
        sd = np.sqrt(np.asarray(p0) * (1 - np.asarray(p0)) / n)
        assert (np.abs(freq[:3] - np.asarray(p0)) < 5 * sd).all(), freq

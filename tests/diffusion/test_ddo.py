"""DDO on exact Gaussian mixtures: at theta = ref the loss gradient is the maximum-likelihood
gradient on the data times beta/2 (zero when the data are the reference), expectations taken by
quadrature on a 1-D grid so the identity is exact; and a few fine-tuning steps of an
over-dispersed oracle mixture denoiser with the ELBO discriminator move it towards the data."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from netlab.diffusion import ddo
from netlab.diffusion.oracle import GaussianMixture


def _log_prob(params, x):
    """1-D mixture log-density; params = (means, log stds, logits)."""
    mu, log_s, logits = params
    z = (x[:, None] - mu) / jnp.exp(log_s)
    comp = -0.5 * z**2 - log_s - 0.5 * jnp.log(2 * jnp.pi)
    return logsumexp(comp + jax.nn.log_softmax(logits), -1)


def test_gradient_at_the_reference_is_the_likelihood_gradient():
    ref = (np.array([-1.0, 1.5]), np.log([0.6, 0.4]), np.array([0.2, -0.3]))  # float64
    data = (np.array([-0.8, 1.2]), np.log([0.5, 0.5]), np.array([0.0, 0.0]))
    x = np.linspace(-8.0, 8.0, 4001)

    def weights(params):  # quadrature weights of E_params[f] on the grid
        w = jnp.exp(_log_prob(params, x))
        return w / w.sum()

    @jax.jit
    def run():
        w_ref = weights(ref)
        out = {}
        for name, target in (("data", data), ("self", ref)):
            w_data = weights(target)

            def ddo_loss(theta):
                d = _log_prob(theta, x) - _log_prob(ref, x)
                return ddo.loss(d, d, 0.7, 2.0, w_data, w_ref)

            def nll(theta):
                return -jnp.sum(w_data * _log_prob(theta, x))

            out[name] = (jax.grad(ddo_loss)(ref), jax.grad(nll)(ref))
        return out

    with jax.enable_x64(True):
        out = jax.tree.map(np.asarray, run())
    g_ddo, g_nll = out["data"]
    for a, b in zip(g_ddo, g_nll):  # beta / 2 = 1: grad L = grad NLL on the data
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert max(np.abs(g).max() for g in g_nll) > 0.05
    for g in out["self"][0]:  # data = reference: theta = ref is stationary
        np.testing.assert_allclose(g, 0.0, atol=1e-10)


def test_few_ddo_steps_move_an_overdispersed_denoiser_to_the_data():
    """Data: the 4-mode mixture with std 0.15; reference: the same with std 0.3. theta = the
    mixture denoiser's log stds (init: the reference's); 20 Adam steps of DDO with the one-sample
    ELBO discriminator (log-SNR ~ U[-4, 6], shared (lambda, eps)) shrink the std error steadily.
    beta = 0.05 tames the ELBO estimate's variance (at beta = 1 the softplus saturates and the
    std does not move in 30 steps); its exact optimum is sharper than the data (p_theta ~
    p_ref (p_data / p_ref)^(1 / beta)), so this checks the first steps, not convergence."""
    means = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) * 1.5
    w = np.full(4, 0.25)
    data_gm = GaussianMixture(means, np.full((4, 2), 0.15), w)
    ref_gm = GaussianMixture(means, np.full((4, 2), 0.3), w)
    lo, hi = -4.0, 6.0

    def denoiser(log_s):
        gm = GaussianMixture(jnp.asarray(means), jnp.exp(log_s), jnp.asarray(w))
        return jax.vmap(lambda xi, li: gm.denoise(xi[None], li[0])[0])

    opt = optax.adam(0.03, b1=0.5)

    @jax.jit
    def fine_tune(key):
        log_s0 = jnp.log(jnp.full((4, 2), 0.3))
        ref = denoiser(log_s0)

        def step(carry, i):
            log_s, state = carry
            kd, kr, kl, ke = jax.random.split(jax.random.fold_in(key, i), 4)
            x = jnp.concatenate([data_gm.sample(kd, 128), ref_gm.sample(kr, 128)])
            lam = jax.random.uniform(kl, (256,), minval=lo, maxval=hi)
            eps = jax.random.normal(ke, x.shape)

            def loss(log_s):
                d = ddo.elbo_log_ratio(denoiser(log_s), ref, x, lam, eps, 1.0 / (hi - lo))
                return ddo.loss(d[:128], d[128:], 1.0, 0.05)

            up, state = opt.update(jax.grad(loss)(log_s), state)
            log_s = optax.apply_updates(log_s, up)
            return (log_s, state), jnp.exp(log_s).mean()

        (log_s, _), path = jax.lax.scan(step, (log_s0, opt.init(log_s0)), jnp.arange(20))
        return jnp.exp(log_s), path

    stds, path = map(np.asarray, fine_tune(jax.random.key(0)))
    before, after = 0.3 - 0.15, np.abs(stds - 0.15).mean()
    print(f"mean |std - data std|: {before:.3g} -> {after:.3g}; mean std path {path.round(3)}")
    assert after < 0.5 * before and np.all(np.diff(path) < 0), path


def test_training_log_ratio_is_the_weighted_loss_difference():
    """ddo.training_log_ratio against numpy: w (mean |D_ref - x|^2 - mean |D_theta - x|^2) at
    x_t = alpha x + sigma eps with alpha^2 = sigmoid(lambda); zero when theta is the reference."""
    rng = np.random.default_rng(3)
    x, eps = rng.standard_normal((2, 5, 3))
    lam, w = rng.uniform(-3, 3, 5), rng.uniform(0.5, 2, 5)
    ref = lambda x_t, lam: 0.7 * x_t  # noqa: E731
    theta = lambda x_t, lam: jnp.tanh(x_t) * (1 + 0.1 * lam)  # noqa: E731
    a, s = np.sqrt(1 / (1 + np.exp(-lam)))[:, None], np.sqrt(1 / (1 + np.exp(lam)))[:, None]
    x_t = a * x + s * eps
    want = w * (
        np.mean((0.7 * x_t - x) ** 2, -1)
        - np.mean((np.tanh(x_t) * (1 + 0.1 * lam[:, None]) - x) ** 2, -1)
    )
    got = ddo.training_log_ratio(theta, ref, x, lam, eps, w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(ddo.training_log_ratio(ref, ref, x, lam, eps, w) == 0)

"""RDGAN: the SUOT losses against a numpy transcription, their balanced-OT (semi-dual) limit as
the marginal penalties' weight grows, and the DDGAN posterior step keeping q(x_{t-1} | x0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import rdgan
from netlab.errors import UserError

NP_PSI = {
    "softplus": lambda s: 2 * (np.logaddexp(0, s) - np.log(2)),
    "kl": lambda s: np.exp(s) - 1,
    "chi2": lambda s: np.where(s >= -2, s + s**2 / 4, -1.0),
    "linear": lambda s: s,
}


def test_suot_losses_transcription_limit_and_posterior():
    rng = np.random.default_rng(0)
    d_real, d_fake = rng.standard_normal((2, 32)) * 2
    x0_pred, x_t = rng.standard_normal((2, 32, 3))
    kinds = ("softplus", "kl", "chi2", "linear")
    abar = rdgan.alpha_bars(4)

    @jax.jit
    def run(d_real, d_fake, x0_pred, x_t):
        c = rdgan.cost(x0_pred, x_t, tau=0.3)
        out = {"c": c, "lg": rdgan.generator_loss(d_fake, c)}
        for k in kinds:
            out[k] = rdgan.discriminator_loss(d_real, d_fake, c, k, k, 1.5, 0.7)
            out[k + "_inf"] = rdgan.discriminator_loss(d_real, d_fake, c, k, k, 1e7, 1e7)
        t = jnp.arange(1, 5)
        out["post"] = jax.vmap(lambda t: jnp.stack(rdgan.posterior(abar, t)))(t)
        g = lambda x, t, z: jnp.broadcast_to(jnp.array([0.5, -1.0, 2.0]), x.shape)  # noqa: E731
        out["sample"] = rdgan.sample(g, x_t, abar, jax.random.key(0), z_dim=2)
        return out

    with jax.enable_x64(True):
        out = jax.tree.map(np.asarray, run(d_real, d_fake, x0_pred, x_t))
    c = 0.3 * np.sum((x0_pred - x_t) ** 2, -1)
    np.testing.assert_allclose(out["c"], c, rtol=1e-12)
    np.testing.assert_allclose(out["lg"], c - d_fake, rtol=1e-12)
    semi_dual = -d_real + d_fake - c  # balanced OT: psi* = identity
    for k in kinds:
        want = 0.7 * NP_PSI[k](-d_real / 0.7) + 1.5 * NP_PSI[k]((d_fake - c) / 1.5)
        np.testing.assert_allclose(out[k], want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out[k + "_inf"], semi_dual, rtol=1e-5, atol=1e-5)
    # the posterior keeps the marginal: x_t ~ N(sqrt(abar_t) x0, 1 - abar_t) gives x_{t-1} ~
    # N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1})
    c0, ct, var = out["post"].T
    np.testing.assert_allclose(c0 + ct * np.sqrt(abar[1:]), np.sqrt(abar[:-1]), rtol=1e-12)
    np.testing.assert_allclose(ct**2 * (1 - abar[1:]) + var, 1 - abar[:-1], atol=1e-12)
    # an exact x0 (a point mass) is reached exactly: the last step has no variance
    np.testing.assert_allclose(out["sample"], np.broadcast_to([0.5, -1.0, 2.0], (32, 3)))
    with pytest.raises(UserError, match="psi_star"):
        rdgan.psi_star(jnp.zeros(2), "hinge")

"""Diffusion-GAN: at T = 0 the objective is the plain GAN's, the schedule and timestep law are
their closed forms, the adaptive rule moves T in the stated direction, and a short toy training
(with T adapting) lowers the energy distance to the data."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.spatial.distance import cdist

from netlab.diffusion import diffusion_gan as dg

T_MAX = 50


def _energy(x, y):
    """Energy distance 2 E|x - y| - E|x - x'| - E|y - y'| (V-statistics)."""
    return 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()


@functools.cache
def _nets():
    g, d = dg.Generator(width=32, depth=1), dg.Discriminator(t_max=T_MAX, width=32, depth=1)
    init = jax.jit(  # one compile for both (eager init dispatches op by op)
        lambda: (
            g.init(jax.random.key(0), jnp.zeros((1, 2))),
            d.init(jax.random.key(1), jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32)),
        )
    )
    return (g, d, *init())


def test_zero_t_is_the_plain_gan_and_the_closed_forms_hold():
    g, d, gp, dp = _nets()
    x, z = np.random.default_rng(0).standard_normal((2, 16, 2)).astype(np.float32)

    @jax.jit
    def run(x, z):
        out = dg.losses(g.apply, d.apply, gp, dp, x, z, jax.random.key(2), 0, T_MAX)
        t0 = jnp.zeros(16, jnp.int32)
        logits = d.apply(dp, x, t0), d.apply(dp, g.apply(gp, z), t0)
        t = jnp.array([0, 1, 5, 37])
        adapted = jnp.stack(  # (T, r_d, step, t_min, t_max) cases of the adaptive rule
            [
                dg.adapt_t(10, 0.9, 0.6, 3),
                dg.adapt_t(10, 0.1, 0.6, 3),
                dg.adapt_t(49, 0.9, 0.6, 3, t_max=T_MAX),
                dg.adapt_t(1, -1.0, 0.6, 3),
            ]
        )
        probs = dg.timestep_probs(37, T_MAX), dg.timestep_probs(0, T_MAX)
        return out, logits, dg.alpha_bar(t, 37, T_MAX), probs, adapted

    out = jax.tree.map(np.asarray, run(x, z))
    (l_d, l_g, r_d), (real, fake), abar_t, (p, p0), adapted = out
    sig = jax.nn.sigmoid
    np.testing.assert_allclose(l_d, np.mean(-np.log(sig(real)) - np.log(1 - sig(fake))), rtol=1e-5)
    np.testing.assert_allclose(l_g, np.mean(-np.log(sig(fake))), rtol=1e-5)
    np.testing.assert_allclose(r_d, np.mean(np.sign(real)))
    # linear beta over {1..T}, T = 37 (numpy), and p_pi(t) = t / sum(1..T)
    beta = np.linspace(1e-4, 2e-2, 37)
    t = np.array([0, 1, 5, 37])
    abar = np.concatenate([[1.0], np.cumprod(1 - beta)])[t]
    np.testing.assert_allclose(abar_t, abar, rtol=1e-5)
    np.testing.assert_allclose(p[1:38], np.arange(1, 38) / (37 * 38 / 2), rtol=1e-6)
    assert p[0] == 0 and p[38:].sum() == 0 and p0[0] == 1
    # adaptive T: up when the discriminator overfits (r_d > target), down otherwise, clipped
    np.testing.assert_array_equal(adapted, [13, 7, T_MAX, 0])


def test_short_training_lowers_the_energy_distance():
    g, d, gp, dp = _nets()
    rng = np.random.default_rng(1)
    data = np.array([1.5, -1.0]) + 0.3 * rng.standard_normal((4096, 2))
    opt = optax.adam(2e-3, b1=0.5)

    z_eval = jax.random.normal(jax.random.key(5), (512, 2))

    @jax.jit
    def train(params, key):
        def step(carry, i):
            params, state, big_t = carry
            kx, kz, kl = jax.random.split(jax.random.fold_in(key, i), 3)
            x = jnp.asarray(data)[jax.random.randint(kx, (64,), 0, 4096)]
            z = jax.random.normal(kz, (64, 2))

            def total(params):  # L_D reaches only D's, L_G only G's parameters (stop-gradients)
                l_d, l_g, r_d = dg.losses(g.apply, d.apply, *params, x, z, kl, big_t, T_MAX)
                return l_d + l_g, r_d

            grads, r_d = jax.grad(total, has_aux=True)(params)
            up, state = opt.update(grads, state)  # Adam is elementwise: one for both nets
            params = optax.apply_updates(params, up)
            return (params, state, dg.adapt_t(big_t, r_d, 0.6, 1, 0, T_MAX)), big_t

        before = g.apply(params[0], z_eval)
        carry = (params, opt.init(params), jnp.int32(10))
        ((gp, _), _, _), ts = jax.lax.scan(step, carry, jnp.arange(200))
        return before, g.apply(gp, z_eval), ts

    before, after, ts = map(np.asarray, train((gp, dp), jax.random.key(3)))
    before, after = _energy(before, data[:512]), _energy(after, data[:512])
    print(
        f"energy distance to the data: {before:.3g} -> {after:.3g}; T range {ts.min()}..{ts.max()}"
    )
    assert after < 0.2 * before, (before, after)
    assert len(np.unique(np.asarray(ts))) > 1  # T moved

"""Diffusion-GAN on digits (gan_digits_task.py) from configs/diffusion/digits_gan.py: on one batch
and key the task's loss equals `diffusion_gan.losses` composed by hand, its gradient sends L_G to
the generator and L_D to the discriminator only, at T = 0 it is the plain non-saturating GAN's
loss written out without the library, and samples are 8x8x1 images in [-1, 1]."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion import diffusion_gan as dgan
from netlab.diffusion.gan_digits_task import DiffusionGANDigits
from netlab.errors import UserError

TINY = {"train.batch_size": "8", "gan.width": "4", "gan.z_dim": "3", "gan.t_max": "20"}


def _task(**extra):
    return DiffusionGANDigits(
        configlib.load("configs/diffusion/digits_gan.py", "cpu", {**TINY, **extra})
    )


def test_loss_is_the_librarys_routes_gradients_and_is_the_plain_gan_at_t0():
    task = _task()
    # random parameters of init's shapes (normal(0, 0.1)): running init eagerly costs more
    shapes = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), shapes
    )
    batch = jax.tree.map(jnp.asarray, task.train_batch(4))
    key = jax.random.key(1)
    g_apply = lambda p, z: task.generator.apply({"params": p}, z)  # noqa: E731
    d_apply = lambda p, y, t: task.discriminator.apply({"params": p}, y, t)  # noqa: E731

    @jax.jit
    def run(params):
        out = {}
        for big_t in (10, 0):
            state = {"gan_state": {"big_t": jnp.asarray(big_t, jnp.int32)}}

            def loss(p, state=state):
                return task.loss_fn(p, state, batch, key, True)[0]

            out[f"loss{big_t}"], out[f"grad{big_t}"] = jax.value_and_grad(loss)(params)
        x = batch["x"].reshape(8, 64)
        k_z, k_loss = jax.random.split(key)
        z = jax.random.normal(k_z, (8, 3))
        gp, dp = params["generator"], params["discriminator"]

        def lib(gp, dp, big_t):
            return dgan.losses(g_apply, d_apply, gp, dp, x, z, k_loss, big_t, 20, 0.05)

        out["lib"] = lib(gp, dp, 10)
        out["grad_g_of_lg"] = jax.grad(lambda gp: lib(gp, dp, 10)[1])(gp)
        out["grad_d_of_ld"] = jax.grad(lambda dp: lib(gp, dp, 10)[0])(dp)
        # T = 0: every t is 0, no noise reaches D (abar_0 = 1)
        zeros = jnp.zeros((8,), jnp.int32)
        l_real, l_fake = d_apply(dp, x, zeros), d_apply(dp, g_apply(gp, z), zeros)
        plain = jax.nn.softplus(-l_real) + jax.nn.softplus(l_fake) + jax.nn.softplus(-l_fake)
        out["plain"] = plain.mean()
        return out

    out = run(params)
    l_d, l_g, _ = out["lib"]
    np.testing.assert_allclose(out["loss10"], l_d + l_g, rtol=1e-6)
    np.testing.assert_allclose(out["loss0"], out["plain"], rtol=1e-6)
    for name, want in (("generator", "grad_g_of_lg"), ("discriminator", "grad_d_of_ld")):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
            out["grad10"][name],
            out[want],
        )
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(out["grad10"]))

    samples = task.sample(params, 5)
    assert samples.shape == (5, 8, 8, 1) and np.abs(samples).max() <= 1.0


def test_bad_gan_values_are_one_line_errors():
    with pytest.raises(UserError, match="gan.timestep_sampling"):
        _task(**{"gan.timestep_sampling": "linear"})
    with pytest.raises(UserError, match="gan.t_init"):
        _task(**{"gan.t_init": "21"})

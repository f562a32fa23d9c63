"""The GAN-style diffusion task (gan_task.py) from configs/diffusion/toy2d_gan.py: for each
method one jitted call takes an Adam step that changes every trained network, and the task's loss
equals the library functions (ddo.py, diffusion_gan.py, rdgan.py) composed by hand on the same
batch and key; DDO's first fine-tuning step has theta = ref, so its loss is (1 + alpha) log 2."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.diffusion import ddo, rdgan
from netlab.diffusion import diffusion_gan as dgan
from netlab.diffusion.gan_task import GANToy2D
from netlab.errors import UserError

TINY = {
    "train.batch_size": "8",
    "gan.width": "8",
    "gan.depth": "1",
    "model.width": "8",
    "model.depth": "1",
    "gan.pretrain_steps": "0",  # DDO fine-tunes from step 0: theta = ref there
    "gan.ref_steps": "1",
    "gan.alpha": "0.7",
    "gan.r1_gamma": "0.5",
    "gan.tau": "0.3",
    "diffusion.sampler": "ddim",
}


def _task(method):
    return GANToy2D(configlib.load("configs/diffusion/toy2d_gan.py", f"method={method}", TINY))


def _random_variables(task):
    """Variables of the right shapes without compiling ``init`` (normal(0, 0.5) floats; the
    Diffusion-GAN length T from init, 10)."""
    shapes = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))
    rng = np.random.default_rng(0)

    def leaf(s):
        if jnp.issubdtype(s.dtype, jnp.integer):
            return jnp.full(s.shape, int(task.config.gan.t_init), s.dtype)
        return jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype)

    return jax.tree.map(leaf, shapes)


def _manual_loss(task, params, state, x, key):
    """The method's loss from the library functions (gan_task.py's docstring, key order)."""
    g = task.config.gan
    if task.method == "ddo":
        ref = state["ddo_ref"]
        k_ref, k_lam, k_eps = jax.random.split(key, 3)

        def den(p):
            return lambda x, lam: task.model_output(p, x, lam, None)[0]

        x_ref = task.ddo_reference_samples(ref, 8, k_ref)  # `diffusion.sampler` from the ref
        both = jnp.concatenate([x, x_ref])
        lam = jax.random.uniform(k_lam, (16,), minval=g.logsnr_min, maxval=g.logsnr_max)
        a, s = jax.nn.sigmoid(lam)[:, None] ** 0.5, jax.nn.sigmoid(-lam)[:, None] ** 0.5
        x_t = a * both + s * jax.random.normal(k_eps, both.shape)
        err = [jnp.sum((den(p)(x_t, lam) - both) ** 2, -1) for p in (ref, params)]
        dr = 0.5 * jnp.exp(lam) * (g.logsnr_max - g.logsnr_min) * (err[0] - err[1])
        return ddo.loss(dr[:8], dr[8:], g.alpha, g.beta)
    gp, dp = params["generator"], params["discriminator"]
    if task.method == "diffusion_gan":
        k_z, k_loss = jax.random.split(key)
        z = jax.random.normal(k_z, (8, g.z_dim))
        l_d, l_g, _ = dgan.losses(
            lambda p, z: task.generator.apply({"params": p}, z),
            lambda p, y, t: task.discriminator.apply({"params": p}, y, t),
            *(gp, dp, x, z, k_loss, state["gan_state"]["big_t"], g.t_max, g.sigma),
        )
        return l_d + l_g
    k_t, k_z, k_1, k_2, k_n = jax.random.split(key, 5)
    abar = rdgan.alpha_bars(g.num_steps)
    t = jax.random.randint(k_t, (8,), 1, g.num_steps + 1)
    ab_t, ab_prev = jnp.asarray(abar)[t][:, None], jnp.asarray(abar)[t - 1][:, None]
    x_prev = jnp.sqrt(ab_prev) * x + jnp.sqrt(1 - ab_prev) * jax.random.normal(k_1, x.shape)
    x_t = jnp.sqrt(ab_t / ab_prev) * x_prev + jnp.sqrt(1 - ab_t / ab_prev) * jax.random.normal(
        k_2, x.shape
    )
    x0 = task.rd_generator(gp, x_t, t, jax.random.normal(k_z, (8, g.z_dim)))
    fake = jax.vmap(rdgan.posterior_sample, (None, 0, 0, 0, 0))(
        abar, x0, x_t, t, jax.random.normal(k_n, x.shape)
    )
    c = rdgan.cost(x0, x_t, g.tau)
    d_fake = task.rd_discriminator(dp, fake, t, x_t)
    l_d = rdgan.discriminator_loss(task.rd_discriminator(dp, x_prev, t, x_t), d_fake, c)
    grad_real = jax.grad(lambda xp: task.rd_discriminator(dp, xp, t, x_t).sum())(x_prev)
    r1 = 0.5 * g.r1_gamma * jnp.mean(jnp.sum(grad_real**2, -1))
    return l_d.mean() + rdgan.generator_loss(d_fake, c).mean() + r1


# Steps each method's loss is taken at (vmapped: one compile): DDO's first fine-tuning step
# (theta = ref) and a later one (ref from the state); Diffusion-GAN at an adaptation step
# (gan.adapt_every = 4).
STEPS = {"ddo": (0, 1), "diffusion_gan": (4,), "rdgan": (0,)}


@pytest.mark.parametrize("method", ["ddo", "diffusion_gan", "rdgan"])
def test_one_step_changes_every_network_and_the_loss_is_the_librarys(method):
    task = _task(method)
    variables = _random_variables(task)
    params = variables.pop("params")
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))
    key = jax.random.key(1)
    opt = optax.adam(1e-2)

    @jax.jit
    def run(params, state):
        if method == "ddo":  # a reference that is not theta (as after a fine-tuning step)
            state = {"ddo_ref": jax.tree.map(lambda p: p * 0.9, params)}

        def at(step):
            fn = jax.value_and_grad(task.loss_fn, has_aux=True)
            return fn(params, state, dict(batch, step=step), key, True)

        (loss, (mets, new_state)), grads = jax.vmap(at)(jnp.asarray(STEPS[method]))
        grads = jax.tree.map(lambda g: g[-1], grads)
        new_params = optax.apply_updates(params, opt.update(grads, opt.init(params))[0])
        out = dict(loss=loss, manual=_manual_loss(task, params, state, batch["x"], key))
        return out, mets, new_state, new_params, state

    out, mets, new_state, new_params, state = run(params, variables)
    np.testing.assert_allclose(out["loss"][-1], out["manual"], rtol=1e-5, atol=1e-6)
    if method == "ddo":
        pairs = [(params, new_params)]
        np.testing.assert_allclose(out["loss"][0], 1.7 * np.log(2), rtol=1e-6)  # theta = ref
        assert mets["ddo/phase"].tolist() == [1, 1]
        for i, ref in enumerate((params, state["ddo_ref"])):  # snapshot at step 0, then frozen
            jax.tree.map(
                lambda a, b: np.testing.assert_array_equal(a[i], b), new_state["ddo_ref"], ref
            )
    else:
        pairs = [(params[k], new_params[k]) for k in ("generator", "discriminator")]
    for old, new in pairs:  # every leaf of every trained network moved
        assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), old, new)))
    if method == "diffusion_gan":  # T moves from 10 by one at an adaptation step
        assert new_state["gan_state"]["big_t"].tolist() in ([9], [11])


def test_bad_method_is_a_one_line_error_with_the_choices():
    with pytest.raises(UserError) as e:
        _task("ddgan")
    msg = str(e.value)
    assert "gan.method" in msg and "ddo, diffusion_gan, rdgan" in msg and "\n" not in msg

"""DDGAN / RDGAN on digits (ddgan_digits_task.py) from configs/diffusion/digits_gan.py:method=...:
on one batch and key the task's loss equals rdgan.py's functions composed by hand (DDGAN's
non-saturating loss, RDGAN's SUOT losses, the R1 penalty, which lazy R1 applies only at steps
that are multiples of gan.lazy_reg), the generator maps (x_t, t, z) to
64-pixel rows in [-1, 1] in which t and z both reach the output, as t reaches the
discriminator's logit, and a method the task does not train is a one-line UserError."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion import rdgan
from netlab.diffusion.ddgan_digits_task import DDGANDigits
from netlab.diffusion.gan_digits_task import DiffusionGANDigits
from netlab.errors import UserError

TINY = {"train.batch_size": "8", "gan.width": "4", "gan.z_dim": "3", "gan.tau": "0.3"}


def _task(method, **extra):
    cfg = configlib.load("configs/diffusion/digits_gan.py", f"method={method}", {**TINY, **extra})
    return DDGANDigits(cfg)


def _random_params(task):
    """Parameters of the right shapes, normal(0, 0.3), without running ``init`` eagerly."""
    shapes = jax.eval_shape(task.init_variables, jax.random.key(0))["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


def _manual(task, params, x0, key, with_r1=True):
    """The loss from rdgan.py by hand (`gan_task.ddgan_loss`'s key order)."""
    g = task.config.gan
    gp, dp = params["generator"], params["discriminator"]
    k_t, k_z, k_1, k_2, k_n = jax.random.split(key, 5)
    abar = rdgan.alpha_bars(4)
    t = jax.random.randint(k_t, (8,), 1, 5)
    ab_t, ab_prev = jnp.asarray(abar)[t][:, None], jnp.asarray(abar)[t - 1][:, None]
    x_prev = jnp.sqrt(ab_prev) * x0 + jnp.sqrt(1 - ab_prev) * jax.random.normal(k_1, x0.shape)
    noise = jax.random.normal(k_2, x0.shape)
    x_t = jnp.sqrt(ab_t / ab_prev) * x_prev + jnp.sqrt(1 - ab_t / ab_prev) * noise
    x0_pred = task.generator.apply({"params": gp}, x_t, t, jax.random.normal(k_z, (8, 3)))
    fake = jax.vmap(rdgan.posterior_sample, (None, 0, 0, 0, 0))(
        abar, x0_pred, x_t, t, jax.random.normal(k_n, x0.shape)
    )
    d = lambda x: task.discriminator.apply({"params": dp}, x, t, x_t)  # noqa: E731
    grad_real = jax.grad(lambda xp: d(xp).sum())(x_prev)
    r1 = 0.5 * g.r1_gamma * jnp.mean(jnp.sum(grad_real**2, -1)) if with_r1 else 0.0
    if task.method == "ddgan":  # written out: non-saturating GAN loss
        l_d = jax.nn.softplus(-d(x_prev)) + jax.nn.softplus(d(fake))
        return l_d.mean() + jax.nn.softplus(-d(fake)).mean() + r1
    c = rdgan.cost(x0_pred, x_t, 0.3)
    l_d = rdgan.discriminator_loss(d(x_prev), d(fake), c)
    return l_d.mean() + rdgan.generator_loss(d(fake), c).mean() + r1


def test_loss_is_the_librarys_and_t_and_z_reach_the_networks():
    tasks = {m: _task(m) for m in ("ddgan", "rdgan")}
    batch = jax.tree.map(jnp.asarray, tasks["ddgan"].train_batch(30))  # 30 % lazy_reg 15 == 0
    lazy = dict(batch, step=jnp.int32(31))  # the same rows at a step without R1
    x0, key = batch["x"].reshape(8, 64), jax.random.key(5)
    params = {m: _random_params(t) for m, t in tasks.items()}

    @jax.jit
    def run(params):
        out = {}
        for m, task in tasks.items():
            out[m] = task.loss_fn(params[m], {}, batch, key, True)[0]
            out[m + "_lib"] = _manual(task, params[m], x0, key)
            out[m + "_lazy"] = task.loss_fn(params[m], {}, lazy, key, True)[0]
            out[m + "_lazy_lib"] = _manual(task, params[m], x0, key, with_r1=False)
        task, p = tasks["rdgan"], params["rdgan"]
        x_t, z = x0[:4], jax.random.normal(jax.random.key(1), (4, 3))
        ts = jnp.asarray([1, 2, 3, 4])
        gen = lambda t, z: task.generator.apply({"params": p["generator"]}, x_t, t, z)  # noqa: E731
        out["g"] = gen(ts, z)
        out["g_t"] = gen(jnp.full((4,), 1), z)
        out["g_z"] = gen(ts, -z)
        disc = lambda t: task.discriminator.apply({"params": p["discriminator"]}, x_t, t, x_t)  # noqa: E731
        out["d"], out["d_t"] = disc(ts), disc(jnp.full((4,), 1))
        return out

    out = run(params)
    for m in ("ddgan", "rdgan"):
        np.testing.assert_allclose(out[m], out[m + "_lib"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[m + "_lazy"], out[m + "_lazy_lib"], rtol=1e-5, atol=1e-6)
        assert out[m] - out[m + "_lazy"] > 1e-6  # the R1 term is there only at step 30
    assert not np.isclose(out["ddgan"], out["rdgan"])  # different objectives
    g = np.asarray(out["g"])
    assert g.shape == (4, 64) and np.all(np.abs(g) <= 1)
    assert np.abs(out["g_t"] - g)[0].max() == 0  # row 0 has t = 1 in both
    assert np.abs(out["g_t"] - g)[1:].max(axis=-1).min() > 1e-4  # t reaches every pixel row
    assert np.abs(out["g_z"] - g).max(axis=-1).min() > 1e-4  # so does z
    assert out["d"][0] == out["d_t"][0] and np.abs(out["d"] - out["d_t"])[1:].min() > 1e-6


def test_a_method_the_task_does_not_train_is_a_one_line_error():
    with pytest.raises(UserError) as e:
        _task("ddgan", **{"gan.method": "diffusion_gan"})
    assert "gan.method" in str(e.value) and "ddgan, rdgan" in str(e.value)
    cfg = configlib.load("configs/diffusion/digits_gan.py", "cpu", {"gan.method": "rdgan"})
    with pytest.raises(UserError) as e:
        DiffusionGANDigits(cfg)
    assert "method=rdgan" in str(e.value) and "\n" not in str(e.value)

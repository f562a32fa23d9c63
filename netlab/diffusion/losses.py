"""One weighted denoising loss, written in x0 space: w(logsnr) * ||x0_hat - x0||^2.

Every usual objective is this loss with some weight (Kingma & Gao 2023, "Understanding Diffusion
Objectives", Sec. 2 and Table 1): eps-MSE is w = SNR, v-MSE is w = 1 + SNR, x0-MSE is w = 1,
min-SNR-gamma (Hang et al. 2023, Eq. 5, eps form) is w = min(SNR, gamma), EDM's lambda(sigma) =
(sigma^2 + sigma_d^2) / (sigma sigma_d)^2 (Karras et al. 2022, Eq. 8 and Table 1), and the sigmoid
weighting of Kingma & Gao (eps form sigmoid(b - logsnr)) is w = SNR sigmoid(b - logsnr).
EDM2's learned uncertainty (Karras et al. 2024, Eq. 21): L = w/exp(u) * mse + u, u(logsnr) a
learned log-variance.

Time sampling draws log-SNR for a batch: uniform or antithetic t through the schedule, logit-normal
t (Esser et al. 2024, Eq. 19), or EDM's log-normal sigma (ln sigma ~ N(P_mean, P_std^2)).
Weightings (`registries.WEIGHTINGS`, `diffusion.weighting`) and time samplings
(`registries.TIME_SAMPLINGS`, `diffusion.time_sampling`) are chosen by name. Everything here runs
in float32 whatever the compute dtype (float64 when the data are float64, for oracle tests).

Branch supervision (DiMR, Liu et al. 2024: every branch predicts at its own resolution): a
backbone sows a lower-resolution prediction with `sow_branch` into the `BRANCHES` collection; the
task adds weight x `branch_loss`, the same weighted loss at that resolution, with the input and
the target box-downsampled by `box_down` (k x k sums / k, so white unit noise stays unit noise:
D x_t = alpha D x0 + sigma D eps is a diffusion state at the same log-SNR).
"""

import jax
import jax.numpy as jnp

from netlab.diffusion import parameterization, schedules
from netlab.diffusion.registries import TIME_SAMPLINGS, WEIGHTINGS

BRANCHES = "branches"  # the Flax collection of sown branch predictions


def sample_logsnr(
    key, n, schedule, kind="uniform", p_mean=-1.2, p_std=1.2, t_eps=1e-3, dtype=jnp.float32
):
    """(n,) log-SNR values of dtype `dtype` drawn by the time sampling `kind`."""
    fn = TIME_SAMPLINGS.get(kind)
    return fn(key, n, schedule, p_mean, p_std, t_eps, dtype).astype(dtype)


@TIME_SAMPLINGS.register("uniform")
def uniform(key, n, schedule, p_mean, p_std, t_eps, dtype):
    t = jax.random.uniform(key, (n,), dtype, minval=t_eps, maxval=1.0)
    return schedule.logsnr(t)


@TIME_SAMPLINGS.register("antithetic")
def antithetic(key, n, schedule, p_mean, p_std, t_eps, dtype):
    """Stratified: (u + i/n) mod 1, a lower-variance estimate of the expected loss."""
    u = jax.random.uniform(key, (), dtype)
    t = t_eps + (1 - t_eps) * jnp.mod(u + jnp.arange(n, dtype=dtype) / n, 1.0)
    return schedule.logsnr(t)


@TIME_SAMPLINGS.register("logit_normal")
def logit_normal(key, n, schedule, p_mean, p_std, t_eps, dtype):
    """Esser et al. 2024, Eq. 19: t = sigmoid(p_mean + p_std z)."""
    t = jax.nn.sigmoid(p_mean + p_std * jax.random.normal(key, (n,), dtype))
    return schedule.logsnr(t)


@TIME_SAMPLINGS.register("log_normal")
def log_normal(key, n, schedule, p_mean, p_std, t_eps, dtype):
    """EDM (Karras et al. 2022, Table 1): ln sigma ~ N(P_mean, P_std^2); logsnr = -2 ln sigma."""
    return -2.0 * (p_mean + p_std * jax.random.normal(key, (n,), dtype))


def weight(logsnr, kind="v", gamma=5.0, sigmoid_bias=-1.0, sigma_data=0.5):
    """The loss weight w(logsnr) of the objective `kind` (x0-MSE equivalent, see above)."""
    return WEIGHTINGS.get(kind)(logsnr, gamma, sigmoid_bias, sigma_data)


@WEIGHTINGS.register("x0")
def x0_weight(logsnr, gamma, sigmoid_bias, sigma_data):
    return jnp.ones_like(logsnr)


@WEIGHTINGS.register("eps")
def eps_weight(logsnr, gamma, sigmoid_bias, sigma_data):
    return jnp.exp(logsnr)


@WEIGHTINGS.register("v")
def v_weight(logsnr, gamma, sigmoid_bias, sigma_data):
    return 1.0 + jnp.exp(logsnr)


@WEIGHTINGS.register("min_snr")
def min_snr_weight(logsnr, gamma, sigmoid_bias, sigma_data):
    """Hang et al. 2023, Eq. 5 (eps form): min(SNR, gamma)."""
    return jnp.minimum(jnp.exp(logsnr), gamma)


@WEIGHTINGS.register("edm")
def edm_weight(logsnr, gamma, sigmoid_bias, sigma_data):
    """Karras et al. 2022, Eq. 8: (sigma^2 + sigma_d^2) / (sigma sigma_d)^2, sigma^2 = 1/SNR."""
    sigma2 = jnp.exp(-logsnr)
    return (sigma2 + sigma_data**2) / (sigma2 * sigma_data**2)


@WEIGHTINGS.register("sigmoid")
def sigmoid_weight(logsnr, gamma, sigmoid_bias, sigma_data):
    """Kingma & Gao 2023: eps-form sigmoid(b - logsnr), i.e. SNR sigmoid(b - logsnr) here."""
    return jnp.exp(logsnr) * jax.nn.sigmoid(sigmoid_bias - logsnr)


def denoising_loss(x0_hat, x0, logsnr, kind="v", logvar=None, **weight_kwargs):
    """Mean over the batch of w(logsnr) * per-example MSE (+ EDM2 uncertainty when logvar given)."""
    axes = tuple(range(1, x0.ndim))
    dt = jnp.promote_types(x0.dtype, jnp.float32)
    mse = jnp.mean((x0_hat.astype(dt) - x0.astype(dt)) ** 2, axis=axes)
    per_example = weight(logsnr, kind, **weight_kwargs) * mse
    if logvar is not None:
        per_example = per_example / jnp.exp(logvar) + logvar
    return per_example.mean(), mse.mean()


def box_down(x, k: int):
    """(B, H, W, C) -> (B, H / k, W / k, C): sums over k x k boxes divided by k."""
    b, h, w, c = x.shape
    return x.reshape(b, h // k, k, w // k, k, c).sum(axis=(2, 4)) / k


def sow_branch(module, name: str, out, weight: float) -> None:
    """Record a branch's prediction `out` (B, h, w, C), in the task's parameterisation at h x w,
    and its loss weight; sown only where the task asks for the collection (training)."""
    value = {"out": out, "weight": jnp.asarray(weight, jnp.float32)}
    module.sow(BRANCHES, name, value, reduce_fn=lambda a, b: b, init_fn=lambda: None)


def branches(collections) -> dict:
    """{name: {"out", "weight"}} of every sown branch prediction (empty when none)."""
    flat = {}
    tree = dict(collections or {}).get(BRANCHES, {})
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(p, "key", p)) for p in path]
        flat.setdefault(keys[-2], {})[keys[-1]] = leaf
    return flat


def branch_loss(out, x0, x_t, logsnr, kind="v", weighting="v", **weight_kwargs):
    """(loss, mse) of a branch prediction `out` at h x h against x0 and x_t box-downsampled by
    k = H / h: x0_hat = denoised(D x_t, out) in parameterisation `kind`, weighted by
    `weighting` (eps with eps weighting is DiMR's ||eps_hat - D eps||^2)."""
    k = x0.shape[1] // out.shape[1]
    x0_r, xt_r = box_down(x0, k), box_down(x_t, k)
    alpha, sigma = (v.reshape((-1, 1, 1, 1)) for v in schedules.alpha_sigma(logsnr))
    x0_hat = parameterization.denoised(xt_r, out.astype(xt_r.dtype), alpha, sigma, kind)
    return denoising_loss(x0_hat, x0_r, logsnr, weighting, **weight_kwargs)

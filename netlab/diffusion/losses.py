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
Everything here runs in float32 whatever the compute dtype.
"""
import jax
import jax.numpy as jnp

TIME_SAMPLING = ("uniform", "antithetic", "logit_normal", "log_normal")
WEIGHTINGS = ("x0", "eps", "v", "min_snr", "edm", "sigmoid")


def sample_logsnr(key, n, schedule, kind="uniform", p_mean=-1.2, p_std=1.2, t_eps=1e-3):
    if kind == "uniform":
        t = jax.random.uniform(key, (n,), minval=t_eps, maxval=1.0)
    elif kind == "antithetic":        # stratified: (u + i/n) mod 1, lower-variance estimate
        u = jax.random.uniform(key, ())
        t = t_eps + (1 - t_eps) * jnp.mod(u + jnp.arange(n) / n, 1.0)
    elif kind == "logit_normal":
        t = jax.nn.sigmoid(p_mean + p_std * jax.random.normal(key, (n,)))
    elif kind == "log_normal":
        log_sigma = p_mean + p_std * jax.random.normal(key, (n,))
        return (-2.0 * log_sigma).astype(jnp.float32)
    else:
        raise ValueError(f"unknown time sampling {kind!r}; choose one of {', '.join(TIME_SAMPLING)}")
    return schedule.logsnr(t.astype(jnp.float32)).astype(jnp.float32)


def weight(logsnr, kind="v", gamma=5.0, sigmoid_bias=-1.0, sigma_data=0.5):
    snr = jnp.exp(logsnr)
    if kind == "x0":
        return jnp.ones_like(logsnr)
    if kind == "eps":
        return snr
    if kind == "v":
        return 1.0 + snr
    if kind == "min_snr":
        return jnp.minimum(snr, gamma)
    if kind == "edm":
        sigma2 = jnp.exp(-logsnr)
        return (sigma2 + sigma_data ** 2) / (sigma2 * sigma_data ** 2)
    if kind == "sigmoid":
        return snr * jax.nn.sigmoid(sigmoid_bias - logsnr)
    raise ValueError(f"unknown loss weighting {kind!r}; choose one of {', '.join(WEIGHTINGS)}")


def denoising_loss(x0_hat, x0, logsnr, kind="v", logvar=None, **weight_kwargs):
    """Mean over the batch of w(logsnr) * per-example MSE (+ EDM2 uncertainty when logvar given)."""
    axes = tuple(range(1, x0.ndim))
    mse = jnp.mean((x0_hat.astype(jnp.float32) - x0.astype(jnp.float32)) ** 2, axis=axes)
    per_example = weight(logsnr, kind, **weight_kwargs) * mse
    if logvar is not None:
        per_example = per_example / jnp.exp(logvar) + logvar
    return per_example.mean(), mse.mean()

"""simple diffusion's multiscale training loss.

Hoogeboom, Heek & Salimans 2023, "simple diffusion: end-to-end diffusion for high resolution
images" (its multiscale training loss): the error is also measured on average-pooled versions
of the image,

    L^s = (1 / s^2) E || D_s[eps] - D_s[eps_hat] ||^2       (D_s: average-pool to s x s)
    L   = sum over s in {32, 64, ..., d} of (1 / s) L^s,

so the low frequencies, which white noise at high resolution barely destroys, keep a say in the
loss. Average pooling is linear and eps - eps_hat = (alpha / sigma)(x0_hat - x0), so the same pooled
sum applies to the x0 residual that netlab's loss weights (`losses.denoising_loss`): the weighting
w(logsnr) of `diffusion.weighting` multiplies the pooled per-example error exactly as it multiplies
the plain one (w = SNR gives the paper's eps form).

The weights here are the paper's 1/s times d, so the full-resolution term keeps weight 1: with the
single scale d the loss is the plain denoising loss, and any other set only adds terms. The task
uses it when `diffusion.multiscale` lists scales (e.g. (8, 4, 2) for the 8 x 8 digits; every scale
must divide the image side).
"""

import jax.numpy as jnp

from netlab.diffusion import losses
from netlab.errors import UserError


def check_scales(scales, data_shape) -> tuple:
    """`diffusion.multiscale` as a tuple of ints (empty: off), checked against the image shape."""
    scales = tuple(int(s) for s in (scales or ()))
    if not scales:
        return ()
    size = data_shape[0] if len(data_shape) == 3 else None
    if size is None or data_shape[0] != data_shape[1]:
        raise UserError(
            f"diffusion.multiscale={scales}: the multiscale loss pools square images, not data "
            f"of shape {tuple(data_shape)}; set diffusion.multiscale=()"
        )
    ok = [s for s in range(1, size + 1) if size % s == 0]
    bad = [s for s in scales if s not in ok]
    if bad:
        raise UserError(
            f"diffusion.multiscale={scales}: scale {bad[0]} does not divide the image side "
            f"{size}; choose from {', '.join(map(str, ok))}"
        )
    return scales


def pool(x, s: int):
    """Average-pool (B, d, d, C) images to (B, s, s, C); s divides d."""
    b, d, _, c = x.shape
    k = d // s
    return x.reshape(b, s, k, s, k, c).mean(axis=(2, 4))


def multiscale_mse(x0_hat, x0, scales):
    """Per-example sum over s of (d / s) * mean((D_s[x0_hat - x0])^2): the paper's (1/s) L^s
    times d."""
    dt = jnp.promote_types(x0.dtype, jnp.float32)
    r = x0_hat.astype(dt) - x0.astype(dt)
    d = x0.shape[1]
    return sum((d / s) * jnp.mean(pool(r, s) ** 2, axis=(1, 2, 3)) for s in scales)


def multiscale_loss(x0_hat, x0, logsnr, scales, kind="v", logvar=None, **weight_kwargs):
    """Like `losses.denoising_loss` with the multiscale error in place of the MSE: -> (mean of
    w(logsnr) * multiscale error [+ EDM2 uncertainty], mean plain MSE for logging)."""
    err = multiscale_mse(x0_hat, x0, scales)
    per_example = losses.weight(logsnr, kind, **weight_kwargs) * err
    if logvar is not None:
        per_example = per_example / jnp.exp(logvar) + logvar
    mse = multiscale_mse(x0_hat, x0, (x0.shape[1],))
    return per_example.mean(), mse.mean()

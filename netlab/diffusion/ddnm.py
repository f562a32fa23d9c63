"""DDNM: zero-shot image restoration by null-space refinement (Wang, Yu & Zhang, ICLR 2023).

For a linear degradation y = A x with pseudo-inverse A^+, every x = A^+ y + (I - A^+ A) x' is
consistent (A x = y whenever y is in the range of A, because A A^+ A = A). DDNM runs DDIM with an
unchanged pretrained denoiser and, at every step, replaces the range-space part of the clean
estimate by the measurement's (eq. 13):

    x0|t  = denoise(x_t)                                   (eq. 12; x0-prediction form)
    x^0|t = x0|t - A^+ (A x0|t - y)  =  A^+ y + (I - A^+ A) x0|t
    x_s   = alpha_s x^0|t + sigma_s (eta z + sqrt(1 - eta^2) eps_hat)

The last line is the authors' code (functions/svd_ddnm.py), where `eta` is the fraction of fresh
noise, not DDIM's eta; with a grid that ends at sigma = 0 the output is x^0|t, so A x = y to float
precision for noise-free y.

DDNM+ (Sec. 3.3, eq. 17-19) for y = A x + sigma_y n works per singular value s_i of A = U S V^T
(the code's `Lambda` / `Lambda_noise`, which we follow; the paper states a scalar lambda_t):
with a = alpha_s and sigma_s of the target time,
- if sigma_s < a sigma_y / s_i (measurement noise dominates): the correction is shrunk by
  lambda_i = s_i sigma_s sqrt(1 - eta^2) / (a sigma_y) and the fresh noise is eta sigma_s z;
- else lambda_i = 1 and the fresh noise is sqrt(sigma_s^2 - a^2 sigma_y^2 / s_i^2) z, no eps_hat;
- in the null space (s_i = 0) the step is DDNM's.
Either way each range-space coordinate of x_s has variance sigma_s^2 given the clean signal, as
DDIM's marginals require: the measurement noise carried by A^+ y counts as part of it.
x^0|t = x0|t - V Lambda V^T A^+ (A x0|t - y). Time travel (RePaint's resampling) is left out.

Operators (`Operator`: A, A^+, and the SVD's right factor as `vt`/`v` with `singulars`
broadcasting against vt's output), all acting on a batch (N, ...):
- `inpainting(mask)`: A = diag(mask) (a projector: A^+ = A), y keeps x's shape;
- `super_resolution(r)`: r x r average pooling of (N, H, W, C); A^+ is nearest upsampling (the
  pseudo-inverse of averaging: each block's row (1/r^2) 1^T has pseudo-inverse 1);
- `colorization()`: the channel mean of (N, H, W, 3) (the code's [0.3333, 0.3334, 0.3333], made
  exact), A^+ replicates the gray value;
- `deblur(kernel, height, width)`: a separable blur with zero padding, A = B_h (x) B_w, SVD per
  axis; the authors zero singular values below 3e-2 (`cutoff`), ours default to a relative 1e-6;
- `general(matrix)`: any matrix on flat (N, D) data, by its SVD.

`sample(denoise, x, grid, op, y, key, eta=..., sigma_y=...)` takes the samplers' `denoise(x,
logsnr) -> x0_hat` (any netlab model: `Task.model_output`, `parameterization.timestep_denoiser`
for an eps/v network, or the Gaussian-mixture oracle) and a log-SNR grid from noise to data.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion.schedules import alpha_sigma


@dataclasses.dataclass(frozen=True)
class Operator:
    """A linear degradation y = A(x) with pseudo-inverse `pinv` and its SVD's right factor:
    `vt(x)` = V^T x in spectral coordinates, `v` the inverse, `singulars` the matching singular
    values (0 in the null space; a float64 host array), broadcasting against vt's output."""

    A: Callable
    pinv: Callable
    vt: Callable
    v: Callable
    singulars: np.ndarray


def _orthonormal_with_mean(n: int) -> np.ndarray:
    """An orthogonal n x n matrix whose first row is 1/sqrt(n) (Helmert-like basis)."""
    m = np.eye(n)
    m[:, 0] = 1.0
    q, _ = np.linalg.qr(m)
    q = q * np.sign(q[0, 0])
    return q.T


def inpainting(mask) -> Operator:
    """A = diag(mask), mask in {0, 1} broadcasting against one example (no batch axis)."""
    mask = np.asarray(mask)
    keep = lambda x: x * jnp.asarray(mask, x.dtype)  # noqa: E731
    return Operator(keep, keep, lambda x: x, lambda z: z, mask)


def super_resolution(factor: int) -> Operator:
    """Average pooling of `factor` x `factor` blocks of (N, H, W, C); A^+ repeats each value."""
    r = factor
    q = _orthonormal_with_mean(r * r)

    def blocks(x):  # (N, H, W, C) -> (N, H/r, W/r, C, r*r)
        n, h, w, c = x.shape
        x = x.reshape(n, h // r, r, w // r, r, c)
        return x.transpose(0, 1, 3, 5, 2, 4).reshape(n, h // r, w // r, c, r * r)

    def unblocks(b):
        n, hb, wb, c, _ = b.shape
        b = b.reshape(n, hb, wb, c, r, r).transpose(0, 1, 4, 2, 5, 3)
        return b.reshape(n, hb * r, wb * r, c)

    def pool(x):
        return blocks(x).mean(-1)

    def upsample(y):
        return jnp.repeat(jnp.repeat(y, r, axis=1), r, axis=2)

    s = np.zeros(r * r)
    s[0] = 1.0 / r  # the row (1/r^2) 1^T has norm 1/r
    return Operator(
        pool,
        upsample,
        lambda x: blocks(x) @ jnp.asarray(q.T, x.dtype),
        lambda z: unblocks(z @ jnp.asarray(q, z.dtype)),
        s,
    )


def colorization() -> Operator:
    """Gray = channel mean of (..., 3); A^+ copies the gray value to the three channels."""
    q = _orthonormal_with_mean(3)
    return Operator(
        lambda x: x.mean(-1, keepdims=True),
        lambda y: jnp.repeat(y, 3, axis=-1),
        lambda x: x @ jnp.asarray(q.T, x.dtype),
        lambda z: z @ jnp.asarray(q, z.dtype),
        np.array([1.0 / np.sqrt(3.0), 0.0, 0.0]),
    )


def blur_matrix(kernel, n: int) -> np.ndarray:
    """The n x n matrix of a 1-D 'same' convolution with zero padding (odd-length kernel)."""
    k = np.asarray(kernel, np.float64)
    half = len(k) // 2
    m = np.zeros((n, n))
    for i in range(n):
        for j in range(max(0, i - half), min(n, i + half + 1)):
            m[i, j] = k[j - i + half]
    return m


def _svd_parts(m: np.ndarray, rcond: float, cutoff: float):
    u, s, vt = np.linalg.svd(m)
    s = np.where((s > rcond * s.max()) & (s > cutoff), s, 0.0)
    return u, s, vt.T


def deblur(kernel, height: int, width: int, rcond: float = 1e-6, cutoff: float = 0.0) -> Operator:
    """Separable blur of (N, H, W, C) by `kernel` along both axes; A^+ and the spectral maps by
    the per-axis SVDs; singular values s_h s_w below rcond * max or `cutoff` count as 0."""
    bh, bw = blur_matrix(kernel, height), blur_matrix(kernel, width)
    uh, sh, vh = _svd_parts(bh, 0.0, 0.0)
    uw, sw, vw = _svd_parts(bw, 0.0, 0.0)
    s = np.outer(sh, sw)
    s = np.where((s > rcond * s.max()) & (s > cutoff), s, 0.0)
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    j = lambda a, x: jnp.asarray(a, x.dtype)  # noqa: E731

    def two_sided(mh, x, mw):  # mh x mw^T on the spatial axes
        return jnp.einsum("ih,nhwc,jw->nijc", j(mh, x), x, j(mw, x))

    def pinv(y):  # V S^+ U^T y
        z = two_sided(uh.T, y, uw.T) * j(inv, y)[:, :, None]
        return two_sided(vh, z, vw)

    return Operator(
        lambda x: two_sided(bh, x, bw),
        pinv,
        lambda x: two_sided(vh.T, x, vw.T),
        lambda z: two_sided(vh, z, vw),
        s[:, :, None],
    )


def general(matrix, rcond: float = 1e-6, cutoff: float = 0.0) -> Operator:
    """y = x M^T for flat (N, D) data; A^+ = V S^+ U^T (singular values below rcond * max or
    `cutoff` count as 0)."""
    m = np.asarray(matrix, np.float64)
    u, s, vt = np.linalg.svd(m, full_matrices=True)
    k = len(s)
    s = np.where((s > rcond * s.max()) & (s > cutoff), s, 0.0)
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    pinv_m = vt[:k].T @ (inv[:, None] * u.T)  # (D, M)
    s_full = np.zeros(m.shape[1])
    s_full[:k] = s
    j = lambda a, x: jnp.asarray(a, x.dtype)  # noqa: E731
    return Operator(
        lambda x: x @ j(m, x).T,
        lambda y: y @ j(pinv_m, y).T,
        lambda x: x @ j(vt, x).T,
        lambda z: z @ j(vt, z),
        s_full,
    )


def step(denoise, x, l_t, l_s, op: Operator, y, noise, eta=0.85, sigma_y=0.0):
    """One DDNM (sigma_y = 0) or DDNM+ step from log-SNR l_t to l_s with fresh noise `noise`.
    Returns (x_s, x0_hat); `sigma_y` is a Python float (it selects the update)."""
    a_t, s_t = alpha_sigma(l_t)
    a_s, s_s = alpha_sigma(l_s)
    x0 = denoise(x, l_t).astype(x.dtype)
    eps = (x - a_t * x0) / s_t
    residual = op.pinv(op.A(x0) - y)
    eta = jnp.asarray(eta, x.dtype)
    keep = jnp.sqrt(1.0 - eta**2)
    if not sigma_y:
        x0_hat = x0 - residual
        return a_s * x0_hat + s_s * (eta * noise + keep * eps), x0_hat
    s = jnp.asarray(op.singulars, x.dtype)
    rng = s > 0
    inv = jnp.where(rng, 1.0 / jnp.where(rng, s, 1.0), 0.0)
    sigma_y = jnp.asarray(sigma_y, x.dtype)
    shrink = rng & (s_s < a_s * sigma_y * inv)
    lam = jnp.where(shrink, s * s_s * keep / (a_s * sigma_y), 1.0)
    x0_hat = x0 - op.v(lam * op.vt(residual))
    d_noise = jnp.where(
        rng & ~shrink,
        jnp.sqrt(jnp.maximum(s_s**2 - (a_s * sigma_y * inv) ** 2, 0.0)),
        s_s * eta,
    )
    d_eps = jnp.where(rng, 0.0, s_s * keep)
    return a_s * x0_hat + op.v(d_noise * op.vt(noise) + d_eps * op.vt(eps)), x0_hat


def sample(denoise, x, grid, op: Operator, y, key=None, *, eta=0.85, sigma_y=0.0):
    """DDNM / DDNM+ over a log-SNR `grid` (noise to data) from x_T = x. On a grid that ends at
    sigma = 0 the result is the last x^0|t (A x = y for noise-free y in A's range)."""
    grid = jnp.asarray(grid, x.dtype)
    keys = jax.random.split(key if key is not None else jax.random.key(0), grid.shape[0] - 1)

    def body(x, inputs):
        l_t, l_s, k = inputs
        noise = jax.random.normal(k, x.shape, x.dtype)
        return step(denoise, x, l_t, l_s, op, y, noise, eta, sigma_y)[0], None

    x, _ = jax.lax.scan(body, x, (grid[:-1], grid[1:], keys))
    return x

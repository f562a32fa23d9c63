"""Weight-free image distances usable as differentiable training metrics (Cas-DM's default).

SSIM (Wang et al. 2004, "Image Quality Assessment: From Error Visibility to Structural Similarity",
Eq. 13): SSIM = (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)),
local statistics under a Gaussian window (sigma 1.5), C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L the
data range, averaged over valid window positions and channels. `ssim_distance = 1 - SSIM`.
"""

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_window(size: int, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def ssim(x, y, data_range: float = 2.0, window: int = 7, sigma: float = 1.5):
    """Per-example SSIM of NHWC images; the window shrinks to the image side if larger."""
    win = min(window, x.shape[1], x.shape[2])
    win -= 1 - win % 2  # odd
    dt = jnp.promote_types(jnp.result_type(x, y), jnp.float32)  # float64 for float64 images
    g = jnp.asarray(gaussian_window(win, sigma), dt)
    c = x.shape[-1]
    kernel = jnp.tile((g[:, None] * g[None, :])[:, :, None, None], (1, 1, 1, c))

    def blur(z):
        return jax.lax.conv_general_dilated(
            z,
            kernel,
            (1, 1),
            "VALID",
            feature_group_count=c,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    x, y = x.astype(dt), y.astype(dt)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def ssim_distance(x, y, data_range: float = 2.0):
    return 1.0 - ssim(x, y, data_range)

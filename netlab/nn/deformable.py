"""Deformable convolution with group-wise offsets and modulation, by bilinear gathers.

DCNv3 (Wang et al. 2023, "InternImage", Eq. 4-5) and DCNv4 (Xiong et al. 2024, "Efficient
Deformable ConvNets", Sec. 3): the C channels are split into G groups; for every output pixel
p0, group g and kernel point k (K = kernel_size^2 points p_k of a dilated grid), the input is
sampled at p0 + s (p_k + Delta_gk(p0)) by bilinear interpolation with zero padding and weighted
by a modulation scalar m_gk(p0):

    y_g(p0) = sum_k m_gk(p0) x_g(p0 + s (p_k + Delta_gk(p0)))            (DCNv3/v4 core)

Offsets Delta and modulation m are inputs here (a layer predicts them from x with a linear map);
DCNv3 softmax-normalises m over the K points, DCNv4 leaves it un-normalised (the caller chooses).
`s` (DCNv4's `offset_scale`) may also be an array, one scale per pixel and group: FlowDCN's
multi-scale deformable convolution (Wang et al. 2024) predicts it. With a `kernel` (K, G, C_g,
O_g) the sampled points are also mixed across the group's channels, the modulated deformable
convolution of DCNv2 (Zhu et al. 2019, Eq. 3) with groups:

    y_go(p0) = sum_k sum_c w_kgco m_gk(p0) x_gc(p0 + s (p_k + Delta_gk(p0)))

Zero offsets with unit modulation and s = 1 is then the grouped convolution with that kernel
('SAME' padding, stride 1), and the core with zero offsets is the depthwise convolution whose
taps are m. Coordinates are pixel indices (pixel centres at integers, i.e. DCNv4's +0.5 centre
convention with align_corners=False) and offsets are (dy, dx) pairs (DCNv4 interleaves (x, y)).
Points outside the image read zero, by floor-based bilinear weights; FlowDCN's Triton kernel
truncates towards zero instead, which differs for coordinates in (-1, 0).

The op is XLA gathers (`jnp.take_along_axis`): four per group and point, differentiable in x,
offsets, modulation, scale and kernel (the bilinear weights' derivative in the coordinates; the
floor has none, so at integer coordinates it is the one-sided derivative towards +y / +x).
"""

import jax.numpy as jnp
import numpy as np


def kernel_grid(kernel_size: int = 3, dilation: int = 1) -> np.ndarray:
    """(K, 2) points (dy, dx) of a dilated kernel_size x kernel_size grid centred on 0, row-major
    (point k = ky * kernel_size + kx), the layout of a convolution kernel's (H, W) axes."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size}: expected an odd integer >= 1")
    r = np.arange(kernel_size) - (kernel_size - 1) // 2
    dy, dx = np.meshgrid(r, r, indexing="ij")
    return (dilation * np.stack([dy, dx], -1).reshape(-1, 2)).astype(np.float32)


def bilinear(x, pos):
    """Bilinear samples of x: (N, H, W, G, C_g) at pos: (N, Q, G, 2) (y, x) pixel coordinates,
    zero outside the image -> (N, Q, G, C_g)."""
    n, h, w, g, c = x.shape
    flat = x.reshape(n, h * w, g, c).transpose(0, 2, 1, 3)  # (N, G, HW, C_g)
    y, xx = pos[..., 0], pos[..., 1]
    y0, x0 = jnp.floor(y), jnp.floor(xx)
    fy, fx = y - y0, xx - x0  # the floor has no gradient: d fy / d y = 1
    out = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            yi, xi = y0 + dy, x0 + dx
            wgt = (fy if dy else 1.0 - fy) * (fx if dx else 1.0 - fx)
            inside = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
            idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
            vals = jnp.take_along_axis(flat, idx.transpose(0, 2, 1)[..., None], axis=2)
            out = out + vals.transpose(0, 2, 1, 3) * jnp.where(inside, wgt, 0.0)[..., None]
    return out


def sample_positions(offsets, kernel_size: int = 3, dilation: int = 1, scale=1.0):
    """(N, H, W, G, K, 2) coordinates p0 + s (p_k + Delta) for offsets (N, H, W, G, K, 2);
    `scale` is a number or an array broadcastable to (N, H, W, G)."""
    n, h, w = offsets.shape[:3]
    grid = jnp.asarray(kernel_grid(kernel_size, dilation), offsets.dtype)
    p0 = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), -1)
    scale = jnp.asarray(scale, offsets.dtype)
    scale = scale.reshape(scale.shape + (1, 1)) if scale.ndim else scale
    return p0[None, :, :, None, None].astype(offsets.dtype) + scale * (grid + offsets)


def deform_conv(x, offsets, mask, kernel=None, *, kernel_size=3, dilation=1, scale=1.0):
    """Group-wise deformable convolution, stride 1, output on the input's pixel grid.

    x: (N, H, W, C) with C = G C_g; offsets: (N, H, W, G, K, 2) (dy, dx) in units of the grid
    step; mask: (N, H, W, G, K) modulation; kernel: None (the DCNv3/v4 core, -> (N, H, W, C)) or
    (K, G, C_g, O_g) (-> (N, H, W, G O_g)). K = kernel_size^2."""
    n, h, w, ch = x.shape
    g, k = mask.shape[-2:]
    if ch % g or k != kernel_size**2 or offsets.shape != (n, h, w, g, k, 2):
        raise ValueError(
            f"deform_conv: x {x.shape}, offsets {offsets.shape}, mask {mask.shape} do not fit "
            f"G={g} groups of {kernel_size}x{kernel_size} points"
        )
    pos = sample_positions(offsets, kernel_size, dilation, scale)  # (N, H, W, G, K, 2)
    pos = pos.transpose(0, 1, 2, 4, 3, 5).reshape(n, h * w * k, g, 2)
    vals = bilinear(x.reshape(n, h, w, g, ch // g), pos).reshape(n, h, w, k, g, ch // g)
    vals = vals * mask.transpose(0, 1, 2, 4, 3)[..., None].astype(vals.dtype)
    if kernel is None:
        return vals.sum(3).reshape(n, h, w, ch)
    return jnp.einsum("nhwkgc,kgco->nhwgo", vals, kernel).reshape(n, h, w, -1)

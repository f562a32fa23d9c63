"""LPIPS with AlexNet features (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features
as a Perceptual Metric", Eq. 1), weights loaded only from a file the user supplies (no downloads).

d(x, y) = sum_l mean_hw || w_l * (n(f_l(x)) - n(f_l(y))) ||^2, with f_l the ReLU outputs of
AlexNet's five conv layers, n the unit normalisation over channels and w_l non-negative channel
weights. Inputs in [-1, 1], NHWC, grey or RGB; images smaller than 64 px are bilinearly resized up.

Weights file: an .npz whose keys follow the PyTorch names, so converting is one line,
`np.savez(path, **{k: v.numpy() for k, v in sd.items()})` where `sd` merges torchvision's
`alexnet().features` state dict (keys `features.{0,3,6,8,10}.{weight,bias}`, OIHW) and the lpips
package's linear layers (`lin{0..4}.model.1.weight`, shape (1, C, 1, 1)).
"""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError

CONVS = ((0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1))  # (torch index, stride, padding)
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def load_weights(path) -> dict:
    with np.load(path) as f:
        data = {k: np.asarray(f[k], np.float32) for k in f.files}
    need = [f"features.{i}.{p}" for i, _, _ in CONVS for p in ("weight", "bias")]
    need += [f"lin{l}.model.1.weight" for l in range(5)]
    missing = [k for k in need if k not in data]
    if missing:
        raise UserError(
            f"cas_dm.lpips_weights={str(path)!r} lacks {missing[0]} (and "
            f"{len(missing) - 1} more); see netlab/diffusion/lpips.py for the keys"
        )
    return {k: jnp.asarray(data[k]) for k in need}


def _max_pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


def features(w, x):
    x = x.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if min(x.shape[1:3]) < 64:
        x = jax.image.resize(x, (x.shape[0], 64, 64, 3), "bilinear")
    h = (x - SHIFT) / SCALE
    out = []
    for n, (i, stride, pad) in enumerate(CONVS):
        kernel = jnp.transpose(w[f"features.{i}.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
        h = jax.lax.conv_general_dilated(
            h,
            kernel,
            (stride, stride),
            [(pad, pad), (pad, pad)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        h = jax.nn.relu(h + w[f"features.{i}.bias"])
        out.append(h)
        if n < 2:
            h = _max_pool(h)
    return out


def lpips(w, x, y):
    """Per-example LPIPS distance between image batches x and y."""
    total = 0.0
    for l, (fx, fy) in enumerate(zip(features(w, x), features(w, y))):
        nx = fx / (jnp.sqrt(jnp.sum(fx**2, -1, keepdims=True)) + 1e-10)
        ny = fy / (jnp.sqrt(jnp.sum(fy**2, -1, keepdims=True)) + 1e-10)
        lin = w[f"lin{l}.model.1.weight"].reshape(-1)
        total = total + jnp.mean(jnp.sum(lin * (nx - ny) ** 2, -1), axis=(1, 2))
    return total


def metric_from_file(path):
    """A Cas-DM metric `(x0_hat, x0) -> per-example distance` from an LPIPS weights file."""
    w = load_weights(path)
    return lambda a, b: lpips(w, a, b)

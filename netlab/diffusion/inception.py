"""Frechet Inception Distance (Heusel et al. 2017) with the FID Inception-v3, from a weights file the
user supplies (no downloads).

The network is Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for
Computer Vision", Fig. 5-7 and Table 1; layer names, kernels, strides and paddings as in
torchvision's `inception_v3`) with the quirks of the TensorFlow FID graph that pytorch-fid's
`FIDInceptionA/C/E` reproduce: the pool branches of the A, C and first E blocks average with
count_include_pad=False, the last E block's pool branch max-pools, BatchNorm eps is 1e-3 (inference
mode, running statistics), inputs in [-1, 1] are resized bilinearly (no antialiasing) to 299x299.
Features are the 2048-d global average pool of Mixed_7c ("pool3").

Weights file: an .npz whose keys are the PyTorch state-dict names of pytorch-fid's FIDInceptionV3
(`Conv2d_1a_3x3.conv.weight` OIHW, `Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}`,
`Mixed_5b.branch1x1.conv.weight`, ...); extra keys (fc, num_batches_tracked) are ignored. Convert
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` with

    python -m netlab.diffusion.inception convert pt_inception-2015-12-05-6726825d.pth inception.npz
    python -m netlab.diffusion.inception fid --weights inception.npz --a A.npz --b B.npz
"""  # noqa: E501

import argparse
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion.metrics import frechet_distance, gaussian_stats
from netlab.errors import UserError

CONVERT = "convert with `python -m netlab.diffusion.inception convert IN.pth OUT.npz` (netlab/diffusion/inception.py)"  # noqa: E501
STRIDE2 = {
    "Conv2d_1a_3x3",
    "Mixed_6a.branch3x3",
    "Mixed_6a.branch3x3dbl_3",
    "Mixed_7a.branch3x3_2",
    "Mixed_7a.branch7x7x3_4",
}
VALID = STRIDE2 | {"Conv2d_2a_3x3", "Conv2d_4a_3x3"}  # no padding; every other conv pads k // 2


def conv_table() -> dict:
    """BasicConv2d name -> (in channels, out channels, kernel h, kernel w), in forward order."""
    t = {
        "Conv2d_1a_3x3": (3, 32, 3, 3),
        "Conv2d_2a_3x3": (32, 32, 3, 3),
        "Conv2d_2b_3x3": (32, 64, 3, 3),
        "Conv2d_3b_1x1": (64, 80, 1, 1),
        "Conv2d_4a_3x3": (80, 192, 3, 3),
    }
    for m, c, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        t.update(
            {
                f"{m}.{k}": v
                for k, v in dict(
                    branch1x1=(c, 64, 1, 1),
                    branch5x5_1=(c, 48, 1, 1),
                    branch5x5_2=(48, 64, 5, 5),
                    branch3x3dbl_1=(c, 64, 1, 1),
                    branch3x3dbl_2=(64, 96, 3, 3),
                    branch3x3dbl_3=(96, 96, 3, 3),
                    branch_pool=(c, pool, 1, 1),
                ).items()
            }
        )
    t.update(
        {
            "Mixed_6a.branch3x3": (288, 384, 3, 3),
            "Mixed_6a.branch3x3dbl_1": (288, 64, 1, 1),
            "Mixed_6a.branch3x3dbl_2": (64, 96, 3, 3),
            "Mixed_6a.branch3x3dbl_3": (96, 96, 3, 3),
        }
    )
    for m, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        t.update(
            {
                f"{m}.{k}": v
                for k, v in dict(
                    branch1x1=(768, 192, 1, 1),
                    branch7x7_1=(768, c7, 1, 1),
                    branch7x7_2=(c7, c7, 1, 7),
                    branch7x7_3=(c7, 192, 7, 1),
                    branch7x7dbl_1=(768, c7, 1, 1),
                    branch7x7dbl_2=(c7, c7, 7, 1),
                    branch7x7dbl_3=(c7, c7, 1, 7),
                    branch7x7dbl_4=(c7, c7, 7, 1),
                    branch7x7dbl_5=(c7, 192, 1, 7),
                    branch_pool=(768, 192, 1, 1),
                ).items()
            }
        )
    t.update(
        {
            "Mixed_7a.branch3x3_1": (768, 192, 1, 1),
            "Mixed_7a.branch3x3_2": (192, 320, 3, 3),
            "Mixed_7a.branch7x7x3_1": (768, 192, 1, 1),
            "Mixed_7a.branch7x7x3_2": (192, 192, 1, 7),
            "Mixed_7a.branch7x7x3_3": (192, 192, 7, 1),
            "Mixed_7a.branch7x7x3_4": (192, 192, 3, 3),
        }
    )
    for m, c in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        t.update(
            {
                f"{m}.{k}": v
                for k, v in dict(
                    branch1x1=(c, 320, 1, 1),
                    branch3x3_1=(c, 384, 1, 1),
                    branch3x3_2a=(384, 384, 1, 3),
                    branch3x3_2b=(384, 384, 3, 1),
                    branch3x3dbl_1=(c, 448, 1, 1),
                    branch3x3dbl_2=(448, 384, 3, 3),
                    branch3x3dbl_3a=(384, 384, 1, 3),
                    branch3x3dbl_3b=(384, 384, 3, 1),
                    branch_pool=(c, 192, 1, 1),
                ).items()
            }
        )
    return t


def weight_shapes() -> dict:
    """Every required state-dict key -> its shape."""
    out = {}
    for name, (cin, cout, kh, kw) in conv_table().items():
        out[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        out.update(
            {f"{name}.bn.{p}": (cout,) for p in ("weight", "bias", "running_mean", "running_var")}
        )
    return out


def random_weights(seed: int = 0) -> dict:
    """He-initialised convs and mild random BatchNorm statistics, for tests (activations stay O(1))."""  # noqa: E501
    rng = np.random.default_rng(seed)
    w = {}
    for k, shape in weight_shapes().items():
        if k.endswith("conv.weight"):
            w[k] = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
        elif k.endswith(("bn.weight", "bn.running_var")):
            w[k] = rng.uniform(0.8, 1.2, shape)
        else:
            w[k] = rng.normal(0, 0.1, shape)
    return {k: v.astype(np.float32) for k, v in w.items()}


def load_weights(path) -> dict:
    """Reads and checks an .npz of FID Inception weights; a UserError (a ValueError) names the first
    missing or mis-shaped key."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    for k, shape in weight_shapes().items():
        if k not in data:
            raise UserError(f"Inception weights file {path} lacks {k}; {CONVERT}")
        if tuple(data[k].shape) != shape:
            raise UserError(
                f"Inception weights file {path}: {k} has shape {tuple(data[k].shape)}, expected "
                f"{shape}; {CONVERT}"
            )
    return {k: jnp.asarray(data[k], jnp.float32) for k in weight_shapes()}


def _conv(w, name, x):
    """BasicConv2d: conv (no bias) -> BatchNorm (inference, eps 1e-3) -> ReLU, BN folded into the conv."""  # noqa: E501
    kernel, (kh, kw) = w[f"{name}.conv.weight"], w[f"{name}.conv.weight"].shape[2:]
    scale = w[f"{name}.bn.weight"] * jax.lax.rsqrt(w[f"{name}.bn.running_var"] + 1e-3)
    shift = w[f"{name}.bn.bias"] - w[f"{name}.bn.running_mean"] * scale
    kernel = jnp.transpose(kernel * scale[:, None, None, None], (2, 3, 1, 0))  # OIHW -> HWIO
    s = 2 if name in STRIDE2 else 1
    pad = [(0, 0), (0, 0)] if name in VALID else [(kh // 2, kh // 2), (kw // 2, kw // 2)]
    y = jax.lax.conv_general_dilated(
        x,
        kernel,
        (s, s),
        pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return jax.nn.relu(y + shift)


def _pool(x, kind, stride=1):
    """3x3 pool: "max" VALID at stride 2, or stride 1 padded by 1 ("max", or "avg" excluding the padding)."""  # noqa: E501
    dims, strides = (1, 3, 3, 1), (1, stride, stride, 1)
    pad = "VALID" if stride == 2 else ((0, 0), (1, 1), (1, 1), (0, 0))
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, pad)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, pad)
    count = jax.lax.reduce_window(
        jnp.ones(x.shape[1:3] + (1,))[None], 0.0, jax.lax.add, dims, strides, pad
    )
    return total / count


def features(w, images):
    """(N, H, W, 1 or 3) images in [-1, 1] (clipped) -> (N, 2048) pool3 features."""
    x = jnp.clip(images.astype(jnp.float32), -1, 1)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    x = jax.image.resize(x, (x.shape[0], 299, 299, 3), "bilinear", antialias=False)
    c = functools.partial(_conv, w)
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = c(name, x)
    x = _pool(c("Conv2d_4a_3x3", c("Conv2d_3b_1x1", _pool(x, "max", 2))), "max", 2)
    for m in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):  # InceptionA
        x = jnp.concatenate(
            [
                c(f"{m}.branch1x1", x),
                c(f"{m}.branch5x5_2", c(f"{m}.branch5x5_1", x)),
                c(f"{m}.branch3x3dbl_3", c(f"{m}.branch3x3dbl_2", c(f"{m}.branch3x3dbl_1", x))),
                c(f"{m}.branch_pool", _pool(x, "avg")),
            ],
            -1,
        )
    x = jnp.concatenate(
        [
            c("Mixed_6a.branch3x3", x),  # InceptionB
            c(
                "Mixed_6a.branch3x3dbl_3",
                c("Mixed_6a.branch3x3dbl_2", c("Mixed_6a.branch3x3dbl_1", x)),
            ),
            _pool(x, "max", 2),
        ],
        -1,
    )
    for m in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):  # InceptionC
        b7, b7d = x, x
        for i in (1, 2, 3):
            b7 = c(f"{m}.branch7x7_{i}", b7)
        for i in (1, 2, 3, 4, 5):
            b7d = c(f"{m}.branch7x7dbl_{i}", b7d)
        x = jnp.concatenate(
            [c(f"{m}.branch1x1", x), b7, b7d, c(f"{m}.branch_pool", _pool(x, "avg"))], -1
        )
    b7 = x  # InceptionD
    for i in (1, 2, 3, 4):
        b7 = c(f"Mixed_7a.branch7x7x3_{i}", b7)
    x = jnp.concatenate(
        [c("Mixed_7a.branch3x3_2", c("Mixed_7a.branch3x3_1", x)), b7, _pool(x, "max", 2)], -1
    )
    for m, pool in (("Mixed_7b", "avg"), ("Mixed_7c", "max")):  # InceptionE
        b3 = c(f"{m}.branch3x3_1", x)
        bd = c(f"{m}.branch3x3dbl_2", c(f"{m}.branch3x3dbl_1", x))
        x = jnp.concatenate(
            [
                c(f"{m}.branch1x1", x),
                c(f"{m}.branch3x3_2a", b3),
                c(f"{m}.branch3x3_2b", b3),
                c(f"{m}.branch3x3dbl_3a", bd),
                c(f"{m}.branch3x3dbl_3b", bd),
                c(f"{m}.branch_pool", _pool(x, pool)),
            ],
            -1,
        )
    return jnp.mean(x, axis=(1, 2))


_features = jax.jit(features)  # module level: every InceptionFeatures shares the compiled programs


class InceptionFeatures:
    """FID features of image batches on the default device, `batch_size` images per jitted call
    (the last batch is zero-padded, so one program serves every batch). `weights`: an .npz path or
    a dict like `load_weights` returns."""

    def __init__(self, weights, batch_size: int = 50):
        if isinstance(weights, dict):
            self.weights = {k: jnp.asarray(v, jnp.float32) for k, v in weights.items()}
        else:
            self.weights = load_weights(weights)
        self.batch_size = int(batch_size)

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images, np.float32)
        b = min(self.batch_size, len(images))
        out = []
        for i in range(0, len(images), b):
            chunk = images[i : i + b]
            padded = np.concatenate(
                [chunk, np.zeros((b - len(chunk),) + chunk.shape[1:], np.float32)]
            )
            out.append(np.asarray(_features(self.weights, jnp.asarray(padded)))[: len(chunk)])
        return np.concatenate(out)

    def stats(self, images):
        """(mean, covariance) in float64 of the features."""
        return gaussian_stats(self(images))

    def fid(self, images_a, images_b) -> float:
        return frechet_distance_of_features(self(images_a), self(images_b))


def frechet_distance_of_features(fa, fb) -> float:
    """`frechet_distance` of the Gaussians fitted to two feature sets, (n, d) each. With fewer samples
    than dimensions it uses that, for centred A, B (rows = samples) and S1 = A'A/(n1-1),
    S2 = B'B/(n2-1), tr (S1^1/2 S2 S1^1/2)^1/2 = sum of singular values of A B' / sqrt((n1-1)(n2-1))
    (S1 S2 and (AB')(AB')' share their non-zero eigenvalues): an n1 x n2 SVD instead of two
    d x d eigendecompositions (2048 x 2048 takes seconds on a CPU)."""  # noqa: E501
    fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
    if max(len(fa), len(fb)) > fa.shape[1]:
        return frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb))
    a, b = fa - fa.mean(0), fb - fb.mean(0)
    na, nb = len(fa) - 1, len(fb) - 1
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(na * nb)
    return float(
        np.sum((fa.mean(0) - fb.mean(0)) ** 2) + np.sum(a**2) / na + np.sum(b**2) / nb - 2 * cross
    )


def convert(src, dst):
    """PyTorch state dict (.pth) -> .npz of float32 arrays; strips a `module.` prefix, checks the result."""  # noqa: E501
    if not os.path.isfile(src):
        raise UserError(
            f"no such file {src}; pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth"
        )
    try:
        import torch
    except ImportError:
        raise UserError(
            "converting a .pth needs torch (pip install torch); or save the state dict yourself: "
            "np.savez(OUT, **{k: v.numpy() for k, v in sd.items()})"
        ) from None
    sd = torch.load(src, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    arrays = {
        k.removeprefix("module."): v.float().numpy()
        for k, v in sd.items()
        if torch.is_tensor(v) and v.is_floating_point()
    }
    np.savez(dst, **arrays)
    load_weights(dst)


def _images(path):
    """An .npz's `x` (or only) array as float images in [-1, 1]; uint8 is scaled from [0, 255]."""
    with np.load(path) as f:
        x = f["x"] if "x" in f.files else f[f.files[0]]
    return x.astype(np.float32) / 127.5 - 1 if x.dtype == np.uint8 else x.astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m netlab.diffusion.inception", description=__doc__.split("\n\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="PyTorch FID Inception state dict (.pth) -> .npz")
    c.add_argument("src")
    c.add_argument("dst")
    f = sub.add_parser(
        "fid", help="FID between two .npz image sets (key x, NHWC, uint8 or [-1, 1])"
    )
    f.add_argument("--weights", required=True)
    f.add_argument("--a", required=True)
    f.add_argument("--b", required=True)
    f.add_argument("--batch-size", type=int, default=50)
    args = p.parse_args(argv)
    try:
        if args.cmd == "convert":
            convert(args.src, args.dst)
            print(f"wrote {args.dst}")
        else:
            print(
                f"{InceptionFeatures(args.weights, args.batch_size).fid(_images(args.a), _images(args.b)):.4f}"  # noqa: E501
            )
    except UserError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()

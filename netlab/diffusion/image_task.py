"""Class-conditional DiT (or ADM U-Net, `model.backbone="unet"`, or any `registries.BACKBONES`
entry) on user-provided image or latent datasets (CIFAR-10, ImageNet latents).

`config.data.source`:
- "tfds_grain": a tfds-prepared dataset (`data.name`, `data.split`, ArrayRecord files under
  `data.tfds_data_dir`) read with grain, see `netlab.data.tfds_grain`: one fixed-seed shuffle per
  epoch, each process reads only its own rows of the global batch, `data.random_flip` flips rows
  horizontally. uint8 images are scaled to [-1, 1] (float features, e.g. latents, are used as
  stored) and, if `data.image_size` differs, resized bilinearly.
- "npz": a file the user supplies with `x` (N, H, W, C) float latents and `label` (N,) ints
  (uniform draws with replacement, no flips).
`data.latent_scale` multiplies float inputs (0.18215 for SD-VAE latents, DiT's recipe).
Batches are a pure function of (seed, step), drawn with their own numpy generator.
Evaluation writes a class-ordered sample grid (first three channels) and the per-channel mean/std
of the samples next to the data's. With `eval.inception_weights` set to a FID Inception-v3 .npz the
user supplies (see inception.py), it also reports `fid` (Heusel et al. 2017) of the samples against
the first `eval.num_samples` training images; FID is biased at small n, so compare equal n only.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from netlab.data import tfds_grain
from netlab.diffusion import inception
from netlab.diffusion.task import _DiffusionTask
from netlab.errors import UserError
from netlab.registry import check_choice, check_range


def _load_source(config):
    d = config.data
    check_choice("data.source", d.source, ("tfds_grain", "npz"))
    if d.source == "tfds_grain":
        return tfds_grain.TfdsGrainSource(
            d.name,
            d.split,
            d.tfds_data_dir,
            seed=int(config.seed),
            batch_size=int(config.train.batch_size),
            keys=(d.image_key, d.label_key),
            random_flip=bool(d.random_flip),
        )
    if not d.path:
        raise UserError("data.source='npz' needs data.path=<file with x (N,H,W,C) and label (N,)>")
    if not os.path.isfile(d.path):
        raise UserError(
            f"data.path={d.path!r} is not a file; give an .npz with x (N,H,W,C) and label (N,)"
        )
    with np.load(d.path) as f:
        return {"x": np.asarray(f["x"], np.float32), "label": np.asarray(f["label"], np.int32)}


class ImageDiffusion(_DiffusionTask):
    def __init__(self, config, policy=None):
        d = config.data
        self.num_classes = check_range("data.num_classes", int(d.num_classes), 0, integer=True)
        for key in ("image_size", "channels"):
            check_range(f"data.{key}", int(d[key]), 1, integer=True)
        self.data_shape = (int(d.image_size), int(d.image_size), int(d.channels))
        super().__init__(config, policy)
        self.source = _load_source(config)
        self.process_local_rows = not isinstance(self.source, dict)  # tfds: own rows only
        self.inception, self._fid_ref = (
            _inception(config.eval.get("inception_weights", ""), int(d.channels)),
            None,
        )

    def __len__(self):
        return len(self.source["label"]) if isinstance(self.source, dict) else len(self.source)

    def init_variables(self, rng):
        return self.model.init(
            rng,
            jnp.zeros((1,) + self.data_shape, self.float_dtype),
            jnp.zeros((1,), self.float_dtype),
            jnp.zeros((1,), jnp.int32),
        )

    def batch_axes(self):
        return {"x": ("batch", None, None, None), "label": ("batch",)}

    def _scaled(self, x, label):
        """Model inputs from stored rows: uint8 -> [-1, 1], float * latent_scale, resized."""
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 127.5 - 1.0
        else:
            x = x.astype(np.float32) * float(self.config.data.latent_scale)
        if x.shape[1:3] != self.data_shape[:2]:
            x = np.asarray(jax.image.resize(x, (len(x),) + self.data_shape, "bilinear"))
        return x, np.asarray(label, np.int32)

    def _rows(self, idx):
        """Rows `idx` of the dataset in stored order (evaluation's real images)."""
        if isinstance(self.source, dict):
            return self._scaled(self.source["x"][idx], self.source["label"][idx])
        r = self.source.records(idx)
        return self._scaled(r[self.source.keys[0]], r[self.source.keys[1]])

    def train_batch(self, step):
        if isinstance(self.source, dict):
            rng = np.random.default_rng([self.config.seed, step, 0x1A6E])
            x, y = self._rows(rng.integers(0, len(self), self.batch_size))
            return {"x": x, "label": y}
        # tfds_grain: read and decode only this process's rows; the trainer keeps exactly this
        # contiguous block (process_rows), so the other processes' rows are left as zeros (and
        # refuses a mesh that would give this process other rows: `process_local_rows`).
        pi, pc = jax.process_index(), jax.process_count()
        r = self.source.batch(step, pi, pc)
        x, y = self._scaled(r[self.source.keys[0]], r[self.source.keys[1]])
        if pc == 1:
            return {"x": x, "label": y}
        full_x = np.zeros((self.batch_size,) + x.shape[1:], x.dtype)
        full_y = np.zeros((self.batch_size,), y.dtype)
        full_x[pi * len(x) : (pi + 1) * len(x)], full_y[pi * len(y) : (pi + 1) * len(y)] = x, y
        return {"x": full_x, "label": full_y}

    def evaluate(self, params, model_state, step, workdir):
        n = int(self.config.eval.num_samples)
        labels = np.arange(n) % self.num_classes if self.num_classes else None  # 0: unconditional
        samples = self.sample(params, n, labels)
        real, _ = self._rows(np.arange(min(n, len(self))))
        scalars = {}
        for c in range(min(3, samples.shape[-1])):
            scalars[f"sample_mean_c{c}"] = float(samples[..., c].mean())
            scalars[f"sample_std_c{c}"] = float(samples[..., c].std())
            scalars[f"data_std_c{c}"] = float(real[..., c].std())
        if self.inception is not None:
            if self._fid_ref is None:  # the real images do not change
                self._fid_ref = self.inception(real)
            scalars["fid"] = inception.frechet_distance_of_features(
                self.inception(samples), self._fid_ref
            )
        return scalars, {"samples": rgb_grid(samples, min(self.num_classes, 10) or 10)}


def _inception(path, channels):
    """The FID feature network from `eval.inception_weights`, or None when the key is empty."""
    if not path:
        return None
    if not os.path.isfile(path):
        raise UserError(
            f"eval.inception_weights={path!r} is not a file; convert the FID Inception-v3 weights "
            f"with `python -m netlab.diffusion.inception convert IN.pth OUT.npz` or set "
            f"--config.eval.inception_weights=''"
        )
    if channels not in (1, 3):
        raise UserError(
            f"eval.inception_weights needs grey or RGB images, not data.channels={channels} "
            f"(latents); set --config.eval.inception_weights=''"
        )
    return inception.InceptionFeatures(inception.load_weights(path))


def rgb_grid(images, cols: int, pad: int = 1) -> np.ndarray:
    """(N, H, W, C) -> uint8 (rows*H, cols*W, 3) of the first three channels, each scaled to its range."""  # noqa: E501
    x = np.asarray(images, np.float32)
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
    lo, hi = x.min(axis=(0, 1, 2)), x.max(axis=(0, 1, 2))
    x = ((x - lo) / np.maximum(hi - lo, 1e-6) * 255).astype(np.uint8)
    n, h, w, _ = x.shape
    rows = -(-n // cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(x):
        r, c = divmod(i, cols)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = img
    return canvas

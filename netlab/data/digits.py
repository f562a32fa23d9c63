"""scikit-learn's digits images (1797 grey 8x8 images, 10 classes): real data that ships offline.

A fixed stratified split (independent of the training seed) holds out `test_fraction` of the images.
Pixels are scaled from 0..16 to [-1, 1].
"""

import functools
import os
import tempfile
import zipfile

import numpy as np

KEYS = ("train_x", "train_y", "test_x", "test_y")


@functools.lru_cache(maxsize=None)
def load(test_fraction: float = 0.2, split_seed: int = 0):
    """-> dict(train_x, train_y, test_x, test_y); x float32 (N, 8, 8, 1) in [-1, 1], y int32.

    The split is kept in the download cache (`_cache_path`): importing scikit-learn (it brings
    scipy.stats) takes seconds of every run's start-up, longer than training a tiny model.
    """
    path = _cache_path(test_fraction, split_seed)
    try:
        with np.load(path) as f:
            return {k: f[k] for k in KEYS}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # none or damaged
        pass
    data = _split(test_fraction, split_seed)
    _save(path, data)
    return data


def _split(test_fraction, split_seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    y = digits.target.astype(np.int32)
    tr_x, te_x, tr_y, te_y = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    return dict(train_x=tr_x, train_y=tr_y, test_x=te_x, test_y=te_y)


def _cache_path(test_fraction, split_seed):
    """A file named by everything the split depends on: the fraction, the seed and the versions of
    scikit-learn (its copy of the images, its splitter) and numpy (the seeded permutations)."""
    from importlib import metadata

    from netlab.data import registry

    versions = f"sklearn{metadata.version('scikit-learn')}-numpy{np.__version__}"
    name = f"split-{float(test_fraction)!r}-{int(split_seed)}-{versions}.npz"
    return registry.cache_dir() / "digits" / name


def _save(path, data):
    """Atomically (temporary file + rename: concurrent runs may write it too); a cache that cannot
    be written is skipped, the split is simply recomputed next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError:
        pass


def epoch_batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the global batch for `step`: epochs of seeded permutations, a pure function of
    (seed, step), so a resumed run sees exactly the data an uninterrupted run would."""
    per_epoch = num_examples // batch_size
    if per_epoch == 0:
        rng = np.random.default_rng([seed, step])
        return rng.choice(num_examples, batch_size, replace=True)
    epoch, offset = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return perm[offset * batch_size : (offset + 1) * batch_size]


def process_rows(global_indices: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This process's contiguous slice of the global batch rows."""
    local = len(global_indices) // process_count
    return global_indices[process_index * local : (process_index + 1) * local]

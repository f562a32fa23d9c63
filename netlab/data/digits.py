"""scikit-learn's digits images (1797 grey 8x8 images, 10 classes): real data that ships offline.

A fixed stratified split (independent of the training seed) holds out `test_fraction` of the images.
Pixels are scaled from 0..16 to [-1, 1].
"""

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def load(test_fraction: float = 0.2, split_seed: int = 0):
    """-> dict(train_x, train_y, test_x, test_y); x float32 (N, 8, 8, 1) in [-1, 1], y int32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    y = digits.target.astype(np.int32)
    tr_x, te_x, tr_y, te_y = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    return dict(train_x=tr_x, train_y=tr_y, test_x=te_x, test_y=te_y)


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

"""Byte-level text that ships with Python: the documentation topics in `pydoc_data.topics`
(~466 kB).

Topics are joined in sorted key order and UTF-8 encoded; the last `valid_fraction` of the bytes is
the held-out validation split (a contiguous tail, so no training window overlaps it).
"""

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def load(valid_fraction: float = 0.1):
    """-> (train, valid) uint8 arrays of bytes."""
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    cut = int(len(data) * (1.0 - valid_fraction))
    return data[:cut], data[cut:]


def windows(data: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(len(starts), length) int32 windows."""
    return np.stack([data[s : s + length] for s in starts]).astype(np.int32)


def train_windows(data: np.ndarray, batch: int, length: int, seed: int, step: int) -> np.ndarray:
    """The global batch for `step`: random windows, a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step, 7])
    return windows(data, rng.integers(0, len(data) - length, size=batch), length)


def eval_windows(data: np.ndarray, count: int, length: int) -> np.ndarray:
    """`count` evenly spaced fixed windows of the validation text."""
    starts = np.linspace(0, len(data) - length - 1, count).astype(np.int64)
    return windows(data, starts, length)

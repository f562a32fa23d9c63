"""Sample-quality metrics that need no downloads.

- Frechet distance between Gaussians fitted to features (Heusel et al. 2017, Eq. 6):
  ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in float64 with an eigh-based square root.
- The digits Frechet distance: features from the hidden layer of a small ConvNet trained once on the
  digits training split and cached in the workdir (`netlab.nn.convnet.ConvNet`, the network of
  the classification task); $NETLAB_FD_CACHE_DIR names a folder that processes share to train it
  once (the test suite sets it).
- Sliced Wasserstein-2 distance for 2-D data (Rabin et al. 2011): mean over random directions of
  the W2 distance between the sorted 1-D projections.
"""  # noqa: E501

import contextlib
import fcntl
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.data import digits
from netlab.nn.convnet import ConvNet
from netlab.sharding.mesh import strip_boxes


def _sqrtm_psd(a):
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def gaussian_stats(features):
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    root1 = _sqrtm_psd(cov1)
    cross = _sqrtm_psd(root1 @ cov2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(cross))


def sliced_wasserstein(a, b, num_projections=256, seed=0) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    dirs = np.random.default_rng(seed).normal(size=(a.shape[1], num_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a[:n] @ dirs, axis=0), np.sort(b[:n] @ dirs, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


_TRAINED: dict = {}  # (steps, seed) -> (params, test accuracy) trained in this process


class DigitsFeatures:
    """Hidden-layer features of a ConvNet trained on the digits training split, cached as .npz."""

    def __init__(self, cache_dir: str, steps: int = 400, seed: int = 0):
        self.net = ConvNet(channels=(16, 32), hidden=64)
        path = os.path.join(cache_dir, "fd_classifier.npz")
        if os.path.exists(path):
            flat = dict(np.load(path))
            self.params = _unflatten(flat)
        elif (steps, seed) in _TRAINED:  # deterministic: one training per process is enough
            self.params, self.test_accuracy = _TRAINED[(steps, seed)]
            self._save(path, cache_dir)
        else:
            # $NETLAB_FD_CACHE_DIR: a folder several processes share (the test suite's workers):
            # the first trains under a file lock, the others wait and load its result.
            shared = os.environ.get("NETLAB_FD_CACHE_DIR", "")
            with _locked(shared, f"fd_classifier_{steps}_{seed}.npz") as shared_path:
                if shared_path and os.path.exists(shared_path):
                    self.params = _unflatten(dict(np.load(shared_path)))
                else:
                    self.params, self.test_accuracy = self._train(steps, seed)
                    _TRAINED[(steps, seed)] = (self.params, self.test_accuracy)
                    if shared_path:
                        self._save(shared_path, shared)
            self._save(path, cache_dir)
        self._features = jax.jit(lambda p, x: self.net.apply({"params": p}, x, features=True))

    def _save(self, path, cache_dir):
        if jax.process_index() == 0:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp.npz"  # several processes may write one path
            np.savez(tmp, **_flatten(self.params))
            os.replace(tmp, path)

    def _train(self, steps, seed):
        # The classifier is replicated: the caller's sharding rules (a Trainer's, data > 1) must
        # not split its one-example init or its batches over the mesh.
        with nn.logical_axis_rules(()):
            return self._train_replicated(steps, seed)

    def _train_replicated(self, steps, seed):
        data = digits.load()
        params = strip_boxes(self.net.init(jax.random.key(seed), data["train_x"][:1])["params"])
        tx = optax.adam(3e-3)
        opt = tx.init(params)

        @jax.jit
        def step(params, opt, x, y):
            def loss(p):
                logits = self.net.apply({"params": p}, x)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

            g = jax.grad(loss)(params)
            u, opt = tx.update(g, opt, params)
            return optax.apply_updates(params, u), opt

        for i in range(steps):
            idx = digits.epoch_batch_indices(len(data["train_y"]), 128, seed, i)
            params, opt = step(params, opt, data["train_x"][idx], data["train_y"][idx])
        pred = self.net.apply({"params": params}, data["test_x"]).argmax(-1)
        return params, float((np.asarray(pred) == data["test_y"]).mean())

    def __call__(self, images):
        """images: (N, 8, 8, 1) in [-1, 1] -> (N, hidden) features."""
        with nn.logical_axis_rules(()):  # any number of images, whatever the caller's rules
            return np.asarray(self._features(self.params, jnp.asarray(images, jnp.float32)))

    def frechet_distance(self, images_a, images_b) -> float:
        return frechet_distance(*gaussian_stats(self(images_a)), *gaussian_stats(self(images_b)))


@contextlib.contextmanager
def _locked(folder, name):
    """Yields folder/name while holding an exclusive lock on folder/name.lock; None if no folder."""
    if not folder:
        yield None
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield os.path.join(folder, name)


def _flatten(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in flat}


def _unflatten(flat):
    out = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return out

"""Classify the digits images: cross-entropy training, held-out test accuracy, a confusion picture."""  # noqa: E501

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from netlab.classify.registries import TRUNKS
from netlab.data import digits
from netlab.nn import precision


class DigitsClassification:
    def __init__(self, config, policy=None):
        self.config = config
        policy = policy or precision.from_config(config.train)
        m = config.model
        # model.trunk: netlab/classify/trunks.py (ConvNet by default)
        self.model = TRUNKS.build(m.get("trunk", "convnet"), m, policy)
        self.data = digits.load(config.data.test_fraction)
        self.num_train_examples = len(self.data["train_y"])  # DP-SGD's accounting (q = B / N)
        self.batch_size = int(config.train.batch_size)
        self._eval = jax.jit(self._predict)

    def init_variables(self, rng):
        return self.model.init(rng, jnp.zeros((1, 8, 8, 1), jnp.float32))

    def batch_axes(self):
        return {"image": ("batch", None, None, None), "label": ("batch",)}

    def global_batch_size(self):
        return self.batch_size

    def train_batch(self, step):
        idx = digits.epoch_batch_indices(
            len(self.data["train_y"]), self.batch_size, self.config.seed, step
        )
        return {"image": self.data["train_x"][idx], "label": self.data["train_y"][idx]}

    def loss_fn(self, params, model_state, batch, rng, train):
        logits = self.model.apply({"params": params}, batch["image"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        accuracy = (logits.argmax(-1) == batch["label"]).mean()
        return loss, ({"accuracy": accuracy}, model_state)

    def _predict(self, params, x):
        return self.model.apply({"params": params}, x).argmax(-1)

    def evaluate(self, params, model_state, step, workdir):
        # The parameters may span several processes: gather the predictions everywhere.
        pred = np.asarray(
            multihost_utils.process_allgather(self._eval(params, self.data["test_x"]), tiled=True)
        )
        truth = self.data["test_y"]
        confusion = np.zeros((10, 10), np.int64)
        np.add.at(confusion, (truth, pred), 1)
        scalars = {"test_accuracy": float((pred == truth).mean())}
        return scalars, {"confusion": _confusion_image(confusion)}


def _confusion_image(confusion: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix as an upscaled uint8 heat map (true class = row)."""
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    img = (255 * (1.0 - rows)).astype(np.uint8)
    return np.kron(img, np.ones((16, 16), np.uint8))

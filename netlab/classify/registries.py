"""The digits classifier's trunk, chosen by `model.trunk` (netlab/classify/trunks.py).

An entry is a builder `(model_config, policy) -> flax module` mapping images (B, 8, 8, 1) to logits
(B, 10). A user's own trunk is `--config.model.trunk=my_package.my_module:build`.
"""

from netlab.registry import Registry

TRUNKS = Registry(
    "classifier_trunk",
    "model.trunk",
    ("netlab.classify",),
    example="configs/classify_digits.py:cpu",
)

# The time-series toy's forecaster, `model.forecaster` (netlab/classify/timeseries.py): a builder
# `(model_config, data_config) -> flax module` mapping (B, window, C) to (B, horizon, C).
FORECASTERS = Registry(
    "forecaster",
    "model.forecaster",
    ("netlab.classify",),
    example="configs/timeseries_toy.py:cpu",
)

"""Forecast a synthetic multivariate series (netlab/classify/timeseries.py): window -> horizon.

python -m netlab.main --config configs/timeseries_toy.py:cpu --workdir runs/ts_tpgn
# --config.model.forecaster= mlp | pgn | tpgn (default) | stanhop | stanhop_net
# test_mse / test_mae are reported next to the naive last-value forecast's naive_mse / naive_mae
# bench/results/timeseries_toy.md: every forecaster, 600 steps each on 2 CPU cores
"""

import ml_collections

from configs import common

PRESETS = ("cpu",)


def get_config(arg=None):
    common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "classify.timeseries_toy"
    c.model = ml_collections.ConfigDict(
        dict(
            forecaster="tpgn",  # mlp | pgn | tpgn | stanhop | stanhop_net (classify/timeseries.py)
            hidden=32,  # MLP units, PGN state, STanHop d_model
            depth=1,  # stanhop: tandem blocks; stanhop_net: STanHop-Blocks (resolutions)
            memory="none",  # stanhop_net: none | tune (learned external memory, Tune-and-Play)
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            seed=0,  # the series (fixed: the same data for every run seed)
            channels=4,
            length=2400,
            period=12,
            noise=0.2,
            window=48,  # multiple of period
            horizon=12,
            test_fraction=0.3,
        )
    )
    c.train.steps = 600
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.eval_every = 300
    c.checkpoint.every = 300
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 30
    c.optimizer.weight_decay = 1e-4
    return c

"""A time-series toy: forecast a synthetic multivariate series, window -> horizon.

The series (`synthetic_series`) is deterministic given `data.seed`: C channels of length T, each a
sum of two sinusoids (a daily-like period `data.period` and a longer one of 3.5 periods, random
phases and amplitudes), a linear trend and Gaussian noise (std `data.noise`); channel c also mixes
in 0.3 of channel c - 1 lagged by a quarter period, so a cross-series model has something to use.
The first `1 - data.test_fraction` of the time axis trains, the rest is held out; the channels are
standardised with the training part's mean and std.

A sample is a window of `data.window` steps of all channels and the next `data.horizon` steps as
target. Every model sees the window minus its last value per channel and adds that value back to
its output (NLinear-style, Zeng et al. 2023), so the zero function is the naive last-value
forecast that the evaluation reports as `naive_mse` / `naive_mae` next to `test_mse` / `test_mae`
(every held-out window, stride 1).

Forecasters (`model.forecaster`, the `FORECASTERS` registry in netlab/classify/registries.py),
each (B, window, C) -> (B, horizon, C), channel-independent unless stated:

- `mlp`: the window of one channel -> `model.hidden` GELU units -> horizon.
- `pgn`: Jia et al. 2024's PGN (netlab/nn/pgn.py) over the window of one channel, its last state
  -> linear head to the horizon.
- `tpgn`: Jia et al. 2024's TPGN forecaster (netlab/nn/pgn.py) with period `data.period`.
- `stanhop`: Wu et al. 2024's STanHop-Block (netlab/nn/stanhop.py): the window cut into
  segments of `data.period` steps, each embedded linearly to `model.hidden`, `model.depth` tandem
  sparse Hopfield blocks (time, then across the C series through routers), then a linear head
  from the flattened segments to the horizon, per series. Not the paper's full STanHop-Net: no
  multi-resolution merging and no decoder (the linear head replaces it).
- `stanhop_net`: the full STanHop-Net (netlab/nn/stanhop_net.py): patch embedding (segments of
  `data.period` steps, `model.hidden` wide), `model.depth` STanHop-Blocks at coarser and coarser
  resolutions (adjacent segments merged in pairs between blocks), each with the external memory
  module `model.memory` (none, or tune: 8 learned memory slots, Tune-and-Play), and the
  hierarchical decoder (one GSH decoder layer per resolution, forecasts summed).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.classify.registries import FORECASTERS
from netlab.errors import UserError
from netlab.nn import pgn, precision, stanhop, stanhop_net
from netlab.registry import check_choice, check_range


def synthetic_series(seed: int, channels: int, length: int, period: int, noise: float):
    """(length, channels) float32: sinusoids + trend + noise, channel c mixing channel c - 1."""
    rng = np.random.default_rng([seed, 20])
    t = np.arange(length, dtype=np.float64)[:, None]
    amp = rng.uniform(0.5, 1.5, (2, channels))
    phase = rng.uniform(0, 2 * np.pi, (2, channels))
    slope = rng.uniform(-1.0, 1.0, channels) / length
    x = amp[0] * np.sin(2 * np.pi * t / period + phase[0])
    x = x + amp[1] * np.sin(2 * np.pi * t / (3.5 * period) + phase[1]) + slope * t
    lag = max(period // 4, 1)
    x[lag:, 1:] += 0.3 * x[:-lag, :-1]
    x = x + noise * rng.standard_normal(x.shape)
    return x.astype(np.float32)


class _Mlp(nn.Module):
    horizon: int
    hidden: int

    @nn.compact
    def __call__(self, x):  # (B, L, C)
        z = jnp.swapaxes(x, 1, 2)
        z = nn.Dense(self.horizon)(nn.gelu(nn.Dense(self.hidden)(z)))
        return jnp.swapaxes(z, 1, 2)


class _Pgn(nn.Module):
    horizon: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        z = jnp.swapaxes(x, 1, 2)[..., None]  # (B, C, L, 1)
        h = pgn.PGN(self.hidden, max_len=x.shape[1])(z)[..., -1, :]
        return jnp.swapaxes(nn.Dense(self.horizon)(h), 1, 2)


class _StanHop(nn.Module):
    horizon: int
    hidden: int
    segment: int
    depth: int

    @nn.compact
    def __call__(self, x):
        b, length, c = x.shape
        z = jnp.swapaxes(x, 1, 2).reshape(b, c, length // self.segment, self.segment)
        z = nn.Dense(self.hidden)(z)  # (B, C, segments, d)
        for _ in range(self.depth):
            z = stanhop.TandemBlock(num_heads=2, routers=2)(z)
        out = nn.Dense(self.horizon)(z.reshape(b, c, -1))
        return jnp.swapaxes(out, 1, 2)


@FORECASTERS.register("mlp")
def mlp(m, d):
    return _Mlp(d.horizon, m.hidden)


@FORECASTERS.register("pgn")
def pgn_forecaster(m, d):
    return _Pgn(d.horizon, m.hidden)


@FORECASTERS.register("tpgn")
def tpgn(m, d):
    return pgn.TPGN(d.period, d.horizon, m.hidden)


@FORECASTERS.register("stanhop")
def stanhop_forecaster(m, d):
    return _StanHop(d.horizon, m.hidden, d.period, check_range("model.depth", m.depth, 1))


@FORECASTERS.register("stanhop_net")
def stanhop_net_forecaster(m, d):
    # Plug-and-Play needs memory patterns at call time, which the toy's windows do not carry
    memory = check_choice("model.memory", m.get("memory", "none"), ("none", "tune"))
    depth = check_range("model.depth", m.depth, 1, integer=True)
    return stanhop_net.STanHopNet(d.horizon, d.period, m.hidden, depth, memory=memory)


class TimeSeriesForecasting:
    def __init__(self, config, policy=None):
        self.config = config
        del policy  # float32 throughout: the toy is tiny
        precision.from_config(config.train)  # validates train.* like every task
        d, m = config.data, config.model
        for key in ("window", "horizon", "period", "channels"):
            check_range(f"data.{key}", d[key], 1, integer=True)
        if d.window % d.period:
            raise UserError(
                f"data.window={d.window} is not a multiple of data.period={d.period}: "
                "tpgn and stanhop cut the window into periods; pick a multiple"
            )
        check_range("data.test_fraction", d.test_fraction, 0.05, 0.9)
        self.model = FORECASTERS.build(m.forecaster, m, d)
        x = synthetic_series(d.seed, d.channels, d.length, d.period, d.noise)
        split = int(len(x) * (1 - d.test_fraction))
        mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
        x = (x - mean) / std
        self.train_x, self.test_x = x[:split], x[split - d.window :]
        self.batch_size = int(config.train.batch_size)
        n_train = len(self.train_x) - d.window - d.horizon + 1
        if n_train < 1:
            raise UserError(f"data.length={d.length} leaves no training window; make it longer")
        self.n_train = self.num_train_examples = n_train
        self._forecast = jax.jit(self.forecast)

    def _windows(self, x, starts):
        d = self.config.data
        idx = starts[:, None] + np.arange(d.window + d.horizon)
        w = x[idx]
        return {"window": w[:, : d.window], "target": w[:, d.window :]}

    def init_variables(self, rng):
        d = self.config.data
        return self.model.init(rng, jnp.zeros((1, d.window, d.channels), jnp.float32))

    def batch_axes(self):
        return {"window": ("batch", None, None), "target": ("batch", None, None)}

    def global_batch_size(self):
        return self.batch_size

    def train_batch(self, step):
        rng = np.random.default_rng([self.config.seed, step, 21])
        return self._windows(self.train_x, rng.integers(0, self.n_train, self.batch_size))

    def forecast(self, params, window):
        last = window[:, -1:]
        return self.model.apply({"params": params}, window - last) + last

    def loss_fn(self, params, model_state, batch, rng, train):
        err = self.forecast(params, batch["window"]) - batch["target"]
        loss = jnp.mean(err**2)
        return loss, ({"mse": loss, "mae": jnp.mean(jnp.abs(err))}, model_state)

    def evaluate(self, params, model_state, step, workdir):
        d = self.config.data
        batch = self._windows(self.test_x, np.arange(len(self.test_x) - d.window - d.horizon + 1))
        pred = np.asarray(self._forecast(params, jnp.asarray(batch["window"])))
        naive = np.repeat(batch["window"][:, -1:], d.horizon, axis=1)
        scalars = {}
        for name, p in (("test", pred), ("naive", naive)):
            err = p - batch["target"]
            scalars[f"{name}_mse"] = float(np.mean(err**2))
            scalars[f"{name}_mae"] = float(np.mean(np.abs(err)))
        return scalars, {}

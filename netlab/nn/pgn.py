"""PGN and TPGN: Jia, Lin, Wang, Chen & Wang 2024, "PGN: The RNN's New Successor is Effective for
Long-Range Time Series Forecasting" (NeurIPS).

An RNN reaches x_s from step t through t - s recurrent steps (an O(L) path, the source of its
long-range troubles) and must run sequentially. The Parallel Gated Network (PGN) replaces the
recurrence by two parallel parts:

- Historical Information Extraction (HIE): h_t = sum_{k=0}^{L-1} W_k x_{t-k} + b, one
  linear map over the whole (zero-padded) history, i.e. a causal convolution whose kernel spans
  the input length L. Every past input reaches h_t through that single linear map: the O(1)
  path, and all t are computed at once.
- Gated mechanism, the RNN's gate without the recurrence:
      g_t = sigmoid(W_g [x_t, h_t] + b_g),   c_t = tanh(W_c [x_t, h_t] + b_c),
      y_t = g_t * h_t + (1 - g_t) * c_t.
  (Our reading of the gate's mixing; the paper's figure mixes the extracted history and the
  candidate with g and 1 - g in this way.)

So y_t depends on every x_s with s <= t and on none with s > t (`tests/nn/test_pgn.py` checks the
exact receptive field with `jax.jacobian`).

TPGN, the forecaster for series with a period P: the input window (L, C) is reshaped
into (L / P, P, C), periods by phases. The long-term branch runs a PGN across the periods for
each phase (the path between two points one period apart is O(1) too) and keeps its last state;
the short-term branch is a linear map over the phases of each period (here of the last period);
their concatenation is projected to the forecast horizon, per channel (channel-independent, as
the paper).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class PGN(nn.Module):
    """(..., T, d_in) -> (..., T, features), causal, T <= max_len."""

    features: int
    max_len: int

    @nn.compact
    def __call__(self, x):
        t, d_in = x.shape[-2:]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} > max_len={self.max_len}")
        kernel = self.param(
            "hie_kernel",
            nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
            (self.max_len, d_in, self.features),
        )
        lead = x.shape[:-2]
        flat = x.reshape((-1, t, d_in))
        # causal: pad max_len - 1 zeros before, none after; kernel index 0 is the oldest lag
        h = jax.lax.conv_general_dilated(
            flat, kernel, (1,), [(self.max_len - 1, 0)], dimension_numbers=("NWC", "WIO", "NWC")
        ).reshape(lead + (t, self.features))
        h = h + self.param("hie_bias", nn.initializers.zeros, (self.features,))
        xh = jnp.concatenate([x, h], axis=-1)
        g = jax.nn.sigmoid(nn.Dense(self.features, name="gate")(xh))
        c = jnp.tanh(nn.Dense(self.features, name="candidate")(xh))
        return g * h + (1 - g) * c


class TPGN(nn.Module):
    """Forecaster (batch, L, C) -> (batch, horizon, C), L divisible by `period`."""

    period: int
    horizon: int
    hidden: int = 32

    @nn.compact
    def __call__(self, x):
        b, length, c = x.shape
        if length % self.period:
            raise ValueError(f"input length {length} is not a multiple of period {self.period}")
        n = length // self.period
        # channel-independent: (b, C, n periods, P phases)
        z = jnp.transpose(x, (0, 2, 1)).reshape(b, c, n, self.period)
        long = jnp.swapaxes(z, -1, -2)[..., None]  # (b, C, P, n, 1): each phase across periods
        long = PGN(self.hidden, max_len=n, name="long")(long)[..., -1, :]  # (b, C, P, hidden)
        long = nn.Dense(self.hidden, name="long_out")(long.reshape(b, c, -1))
        short = nn.Dense(self.hidden, name="short")(z[..., -1, :])  # last period's P phases
        out = nn.Dense(self.horizon, name="head")(jnp.concatenate([long, short], axis=-1))
        return jnp.transpose(out, (0, 2, 1))

"""GCRN (Seo, Defferrard, Vandergheynst & Bresson, ICONIP 2018, "Structured Sequence Modeling
with Graph Convolutional Recurrent Networks"), model 2: an LSTM whose gates are Chebyshev graph
convolutions, for sequences of graph signals on a fixed graph (snapshots x_t [N, F]).

Chebyshev convolution (Defferrard et al. 2016, the paper's eq. 2): ``x *_G theta = sum_{k<K}
T_k(L~) x theta_k`` with ``T_0 = I``, ``T_1 = L~``, ``T_k = 2 L~ T_{k-1} - T_{k-2}`` and the
rescaled Laplacian ``L~ = 2 L / lambda_max - I`` of the normalised Laplacian
``L = I - D^-1/2 A D^-1/2``; lambda_max = 2 as in the authors' code (``rescale_L``), so
``L~ = -D^-1/2 A D^-1/2`` (:func:`scaled_laplacian`, dense: GCRN's graphs are small grids and
word graphs). K = 1 is a per-node linear map, so GCRN with K = 1 is an LSTM applied to every node
independently (tested against ``flax.linen.LSTMCell``).

Cell (eq. 8), gates i, f, g (= the paper's cell input), o:

    i = sigma(W_xi *_G x_t + W_hi *_G h_{t-1} + w_ci ⊙ c_{t-1} + b_i),  f alike,
    c_t = f ⊙ c_{t-1} + i ⊙ tanh(W_xc *_G x_t + W_hc *_G h_{t-1} + b_c),
    o = sigma(W_xo *_G x_t + W_ho *_G h_{t-1} + w_co ⊙ c_t + b_o),     h_t = o ⊙ tanh(c_t).

The peephole terms w_c are the paper's; the authors' code has none (``peephole=False``, the
default here, which is what makes K = 1 equal to a plain LSTM cell). :class:`GCRN` scans the cell
over time (causal by construction: the output at t never depends on x_{>t}) and maps every h_t to
``out_features`` with a linear read-out.

Registered as ``model.name = "gcrn"`` with ``TASK = "snapshot"``: :class:`SnapshotForecasting`
(config ``task = "graph.snapshot_forecasting"``) trains it to predict the next snapshot
of a synthetic graph diffusion (a stand-in for the paper's moving-MNIST / PTB sequences, which
are not offline here).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import builder
from netlab.graph import datasets as D
from netlab.graph.registries import MODELS
from netlab.registry import check_range


def scaled_laplacian(adj) -> np.ndarray:
    """L~ = 2 L / 2 - I = -D^-1/2 A D^-1/2 of a dense symmetric adjacency (isolated nodes: 0)."""
    adj = np.asarray(adj, np.float64)
    d = adj.sum(-1)
    inv = np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
    return -(inv[:, None] * adj * inv[None, :])


class ChebConv(nn.Module):
    """sum_{k<K} T_k(L~) x W_k (+ b); lap [N, N], x [..., N, F] -> [..., N, features]."""

    features: int
    K: int = 3
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, lap, x):
        shape = (self.K, x.shape[-1], self.features)
        w = self.param("kernel", nn.initializers.lecun_normal(), shape, self.param_dtype)
        x, lap, w = nn.dtypes.promote_dtype(x, lap, w, dtype=self.dtype)
        prop = lambda h: jnp.einsum("nm,...mf->...nf", lap, h)  # noqa: E731
        t_prev, t_cur = None, x
        out = t_cur @ w[0]
        for k in range(1, self.K):
            t_next = prop(t_cur) if k == 1 else 2 * prop(t_cur) - t_prev
            t_prev, t_cur = t_cur, t_next
            out = out + t_cur @ w[k]
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            out = out + bias.astype(out.dtype)
        return out


class GCRNCell(nn.Module):
    """One step of model 2; carry (c, h) [..., N, hidden], x [..., N, F]."""

    hidden: int
    K: int = 3
    peephole: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x, lap):
        c, h = carry
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = ChebConv(4 * self.hidden, self.K, name="x", **kw)(lap, x)
        z = z + ChebConv(4 * self.hidden, self.K, use_bias=False, name="h", **kw)(lap, h)
        i, f, g, o = jnp.split(z, 4, -1)
        if self.peephole:
            w = self.param("peephole", nn.initializers.zeros, (3, self.hidden), self.param_dtype)
            w = w.astype(z.dtype)
            i, f = i + w[0] * c, f + w[1] * c
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        if self.peephole:
            o = o + w[2] * c
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h


@MODELS.register("gcrn")
class GCRN(nn.Module):
    """xs [T, ..., N, F] on the graph ``lap`` (:func:`scaled_laplacian`) -> [T, ..., N, out]."""

    TASK = "snapshot"

    hidden: int = 16
    out_features: int = 1
    K: int = 3
    peephole: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_range("model.K", self.K, 1, None, integer=True)
        check_range("model.hidden", self.hidden, 1, None, integer=True)
        super().__post_init__()

    @nn.compact
    def __call__(self, lap, xs):
        scan = nn.scan(
            GCRNCell,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=(0, nn.broadcast),
        )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        zeros = jnp.zeros((*xs.shape[1:-1], self.hidden), self.dtype or xs.dtype)
        cell = scan(self.hidden, self.K, self.peephole, name="cell", **kw)
        _, hs = cell((zeros, zeros), xs, lap)
        return nn.Dense(self.out_features, name="readout", **kw)(hs)


# -- task: next-snapshot forecasting on a synthetic graph diffusion ------------------------------

DATA_KEYS = ("num_nodes", "num_sequences", "seq_len", "feature_dim", "noise", "seed")


def diffusion_sequences(num_nodes, num_sequences, seq_len, feature_dim, noise, seed):
    """(adjacency [N, N], signals [S, seq_len + 1, N, F]): on a Watts-Strogatz graph (k = 4,
    p = 0.1), x_{t+1} = 0.9 Â x_t + noise eps_t with Â = D^-1/2 (A + I) D^-1/2 — a process whose
    next snapshot depends on the neighbours, so a graph model beats persistence (x_{t+1} = x_t)."""
    import networkx as nx

    adj = nx.to_numpy_array(nx.connected_watts_strogatz_graph(num_nodes, 4, 0.1, seed=seed))
    a_hat = adj + np.eye(num_nodes)
    d = a_hat.sum(-1) ** -0.5
    a_hat = d[:, None] * a_hat * d[None, :]
    rng = np.random.default_rng(seed)
    x = [rng.normal(size=(num_sequences, num_nodes, feature_dim))]
    for _ in range(seq_len):
        x.append(0.9 * np.einsum("nm,smf->snf", a_hat, x[-1]) + noise * rng.normal(size=x[0].shape))
    return adj, np.stack(x, 1)


class SnapshotForecasting:
    """Next-snapshot regression (MSE) for ``TASK = "snapshot"`` models such as GCRN: inputs
    x_0..x_{T-1} of each sequence, targets x_1..x_T; the first 80 % of the sequences train
    (full batch), the rest are scored by ``evaluate`` (test MSE and the persistence baseline's).
    Config: ``task = "graph.snapshot_forecasting"``, ``model.name = "gcrn"``,
    ``data.*`` = :data:`DATA_KEYS`."""

    def __init__(self, config, policy=None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        fdt = builder.float_dtype(self.policy)
        d = config.data
        D.check_data_keys(d, DATA_KEYS, "SnapshotForecasting")
        spec = builder.model_spec(config, self.policy, "snapshot", defaults={"name": "gcrn"})
        check_range("data.num_nodes", d.num_nodes, 6, None, integer=True)
        check_range("data.seq_len", d.seq_len, 1, None, integer=True)
        if int(d.num_sequences) < 2:
            raise UserError(f"data.num_sequences={d.num_sequences}: need >= 2 (train and test)")
        adj, seqs = diffusion_sequences(
            int(d.num_nodes),
            int(d.num_sequences),
            int(d.seq_len),
            int(d.get("feature_dim", 1)),
            float(d.get("noise", 0.1)),
            int(d.get("seed", 0)),
        )
        self.lap = scaled_laplacian(adj).astype(fdt)
        seqs = np.moveaxis(seqs, 1, 0).astype(fdt)  # [T + 1, S, N, F]
        n_train = max(1, int(0.8 * seqs.shape[1]))
        self.train = {"x": seqs[:-1, :n_train], "y": seqs[1:, :n_train], "lap": self.lap}
        self.test = {"x": seqs[:-1, n_train:], "y": seqs[1:, n_train:], "lap": self.lap}
        self.model = spec(out_features=seqs.shape[-1])
        self._mse = jax.jit(self.mse)

    def init_variables(self, rng):
        return self.model.init(rng, jnp.asarray(self.lap), jnp.asarray(self.train["x"]))

    def batch_axes(self):
        return {k: None for k in self.train}

    def global_batch_size(self):
        return 0

    def train_batch(self, step):
        return self.train

    def mse(self, params, batch):
        pred = self.model.apply({"params": params}, batch["lap"], batch["x"])
        return jnp.mean(jnp.square(pred - batch["y"]))

    def loss_fn(self, params, model_state, batch, rng, train):
        loss = self.mse(params, batch)
        return loss, ({"mse": loss}, model_state)

    def evaluate(self, params, model_state, step, workdir):
        t = self.test
        persistence = float(np.mean(np.square(t["x"] - t["y"])))
        return {"test_mse": float(self._mse(params, t)), "persistence_mse": persistence}, {}


__all__ = [
    "GCRN",
    "ChebConv",
    "GCRNCell",
    "SnapshotForecasting",
    "diffusion_sequences",
    "scaled_laplacian",
]

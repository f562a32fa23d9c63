"""Directed-graph clustering with DIGRAC (He et al., LoG 2022) on a generated directed SBM, for the
netlab trainer.

Config (see configs/graph/digrac_dsbm.py):
    model.hidden, model.hops, model.dropout, model.tau (DIMPA self-loop weight)
    data.n, data.k, data.p, data.eta, data.style, data.ambient, data.size_ratio, data.graph_seed
    (any other data.* key is a config error)
    loss.beta (number of cluster pairs in the imbalance objective; 0 -> K(K-1)/2), loss.normalisation

Training is unsupervised (the probabilistic flow-imbalance loss, no labels); ``evaluate`` reports
the ARI of argmax P against the planted clusters, and ``objective`` the deterministic (dropout off)
imbalance loss, the label-free criterion for choosing among restarts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import datasets as D
from netlab.graph import digrac, generators
from netlab.graph import graphs as G

DATA_KEYS = ("n", "k", "p", "eta", "style", "ambient", "size_ratio", "graph_seed")


class DigraphClustering:
    """DIGRAC on a DSBM: unsupervised training on the flow-imbalance loss, ARI as evaluation."""

    def __init__(self, config):
        self.config = config
        d, m = config.data, config.model
        D.check_data_keys(d, DATA_KEYS, "DigraphClustering")
        F = generators.meta_graph(d.style, int(d.k), float(d.eta), bool(d.get("ambient", False)),
                                  rng=int(d.graph_seed))
        s, r, self.labels = generators.dsbm(int(d.n), int(d.k), float(d.p), F, float(d.get("size_ratio", 1.0)),
                                            rng=int(d.graph_seed))
        self.n, self.k = int(d.n), int(d.k)
        gs = digrac.dimpa_graphs(s, r, self.n, float(m.get("tau", 0.5)))
        x = np.zeros((gs["source"].num_nodes, 2 * self.k), np.float32)
        x[:self.n] = digrac.hermitian_features(s, r, self.n, self.k)
        self.arrays = {**G.to_arrays(gs["source"], "src_"), **G.to_arrays(gs["target"], "tgt_"), "x": x}
        self.model = digrac.DIGRAC(self.k, hidden=int(m.hidden), hops=int(m.hops), dropout=float(m.dropout))
        self.beta = int(config.loss.beta) if config.loss.get("beta", 0) else self.k * (self.k - 1) // 2
        self.normalisation = str(config.loss.get("normalisation", "vol_sum"))
        self._predict = jax.jit(self._assign)

    @staticmethod
    def _graphs(a):
        return G.from_arrays(a, "src_"), G.from_arrays(a, "tgt_")

    def init_variables(self, rng):
        src, tgt = self._graphs(jax.tree.map(jnp.asarray, self.arrays))
        return self.model.init({"params": rng, "dropout": rng}, src, tgt, jnp.asarray(self.arrays["x"]))

    def batch_axes(self):
        return {k: None for k in self.arrays}

    def global_batch_size(self):
        return 0

    def train_batch(self, step, process_index, process_count):
        return self.arrays

    def loss_fn(self, params, model_state, batch, rng, train):
        src, tgt = self._graphs(batch)
        rngs = {"dropout": rng} if train else {}
        P, _ = self.model.apply({"params": params}, src, tgt, batch["x"], train=train, rngs=rngs)
        loss = digrac.imbalance_loss(P, digrac.adjacency_matmul(src, P), digrac.total_degree(src), self.beta,
                                     self.normalisation)
        return loss, ({"imbalance": 1.0 - loss}, model_state)

    def objective(self, params, arrays=None):
        """The training loss with dropout off: label-free, so usable to pick among restarts."""
        arrays = self.arrays if arrays is None else arrays
        return self.loss_fn(params, {}, arrays, None, False)[0]

    def _assign(self, params, arrays):
        src, tgt = self._graphs(arrays)
        return self.model.apply({"params": params}, src, tgt, arrays["x"])[0].argmax(-1)

    def evaluate(self, params, model_state, step, workdir):
        pred = np.asarray(self._predict(params, self.arrays))[:self.n]
        return {"ari": digrac.adjusted_rand_index(self.labels, pred)}, {}

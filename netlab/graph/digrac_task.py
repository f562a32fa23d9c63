"""Directed-graph clustering with DIGRAC (He et al., LoG 2022) on a generated directed SBM, for the
netlab trainer (`task = "graph.digraph_clustering"`).

Config (see configs/graph/digrac_dsbm.py):
    model.name ("digrac", the default; any model of `registries.MODELS` with TASK "digraph"),
    model.hidden, model.hops, model.dropout, model.tau (DIMPA self-loop weight, read here)
    data.n, data.k, data.p, data.eta, data.style, data.ambient, data.size_ratio, data.graph_seed
    (any other data.* key is a config error)
    loss.beta (number of cluster pairs in the imbalance objective; 0 -> K(K-1)/2),
    loss.normalisation (plain | vol_sum | vol_min | vol_max)

Training is unsupervised (the probabilistic flow-imbalance loss, no labels); ``evaluate`` reports
the ARI of argmax P against the planted clusters, and ``objective`` the deterministic (dropout off)
imbalance loss, the label-free criterion for choosing among restarts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import builder, digrac, generators, padding
from netlab.graph import datasets as D
from netlab.graph import graphs as G
from netlab.registry import check_choice, check_range

DATA_KEYS = ("n", "k", "p", "eta", "style", "ambient", "size_ratio", "graph_seed")


class DigraphClustering:
    """DIGRAC on a DSBM: unsupervised training on the flow-imbalance loss, ARI as evaluation."""

    def __init__(self, config, policy=None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        fdt = builder.float_dtype(self.policy)
        d, m = config.data, config.model
        D.check_data_keys(d, DATA_KEYS, "DigraphClustering")
        spec = builder.model_spec(
            config, self.policy, "digraph", consumed=("tau",), defaults={"name": "digrac"}
        )
        check_choice("data.style", d.style, generators.STYLES)
        check_range("data.eta", float(d.eta), 0.0, 0.5)
        check_range("data.p", float(d.p), 0.0, 1.0)
        check_range("data.k", d.k, 1, int(d.n), integer=True)
        self.normalisation = str(config.loss.get("normalisation", "vol_sum"))
        check_choice("loss.normalisation", self.normalisation, digrac.NORMALISATIONS)
        self.n, self.k = int(d.n), int(d.k)
        pairs = self.k * (self.k - 1) // 2
        self.beta = int(config.loss.beta) if config.loss.get("beta", 0) else pairs
        if not 1 <= self.beta <= pairs:
            raise UserError(
                f"loss.beta={self.beta}: expected 1..{pairs} (the number of cluster "
                f"pairs for data.k={self.k}), or 0 for all pairs"
            )
        F = generators.meta_graph(
            d.style, self.k, float(d.eta), bool(d.get("ambient", False)), rng=int(d.graph_seed)
        )
        s, r, self.labels = generators.dsbm(
            self.n, self.k, float(d.p), F, float(d.get("size_ratio", 1.0)), rng=int(d.graph_seed)
        )
        gs = digrac.dimpa_graphs(s, r, self.n, float(m.get("tau", 0.5)), dtype=fdt)
        x = np.zeros((gs["source"].num_nodes, 2 * self.k), fdt)
        x[: self.n] = digrac.hermitian_features(s, r, self.n, self.k, fdt)
        self.arrays = {
            **padding.to_arrays(gs["source"], "src_"),
            **padding.to_arrays(gs["target"], "tgt_"),
            "x": x,
        }
        self.model = spec(num_clusters=self.k)
        self._predict = jax.jit(self._assign)

    @staticmethod
    def _graphs(a):
        return G.from_arrays(a, "src_"), G.from_arrays(a, "tgt_")

    def init_variables(self, rng):
        src, tgt = self._graphs(jax.tree.map(jnp.asarray, self.arrays))
        return self.model.init(
            {"params": rng, "dropout": rng}, src, tgt, jnp.asarray(self.arrays["x"])
        )

    def batch_axes(self):
        return {k: None for k in self.arrays}

    def global_batch_size(self):
        return 0

    def train_batch(self, step):
        return self.arrays

    def loss_fn(self, params, model_state, batch, rng, train):
        src, tgt = self._graphs(batch)
        rngs = {"dropout": rng} if train else {}
        P, _ = self.model.apply({"params": params}, src, tgt, batch["x"], train=train, rngs=rngs)
        loss = digrac.imbalance_loss(
            P,
            digrac.adjacency_matmul(src, P),
            digrac.total_degree(src),
            self.beta,
            self.normalisation,
        )
        return loss, ({"imbalance": 1.0 - loss}, model_state)

    def objective(self, params, arrays=None):
        """The training loss with dropout off: label-free, so usable to pick among restarts."""
        arrays = self.arrays if arrays is None else arrays
        return self.loss_fn(params, {}, arrays, None, False)[0]

    def _assign(self, params, arrays):
        src, tgt = self._graphs(arrays)
        return self.model.apply({"params": params}, src, tgt, arrays["x"])[0].argmax(-1)

    def evaluate(self, params, model_state, step, workdir):
        pred = np.asarray(self._predict(params, self.arrays))[: self.n]
        return {"ari": digrac.adjusted_rand_index(self.labels, pred)}, {}

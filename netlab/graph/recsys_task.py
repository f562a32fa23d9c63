"""Recommendation task (LightGCN / UltraGCN on LastFM or Gowalla) for the netlab trainer.

Config (see configs/graph/lightgcn_lastfm.py):
    model.name        "lightgcn" | "ultragcn"; model.dim, model.num_layers, model.init_std,
                      model.reg (L2 on batch embeddings), UltraGCN: model.lam, model.gamma,
                      model.neg_weight, model.num_negatives, model.num_neighbors
    data.name         "lastfm" | "gowalla";  data.data_dir ("" -> $NETLAB_DATA_DIR)
    data.k            cut-off of Recall@k / NDCG@k (20);  data.eval_users_per_chunk
    train.batch_size  (user, positive, negative) triples per step

A batch is drawn by `bpr_triples(seed, step, ...)`, a pure function of (seed, step): users uniform
among users with training items, one of the user's training items, and negatives uniform among
items the user has not interacted with in training. The normalised bipartite graph travels in the
batch as replicated leaves. Evaluation ranks all items per test user with training items masked.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import graphs as G
from netlab.graph import recsys, recsys_data


def bpr_triples(seed: int, step: int, batch_size: int, indptr, indices, num_items: int,
                num_negatives: int = 1):
    """(users[B], pos[B], neg[B, M]) for `step`; identical on every process for the same inputs."""
    rng = np.random.default_rng([int(seed), int(step), 0x42])
    active = np.nonzero(np.diff(indptr) > 0)[0]
    users = active[rng.integers(0, len(active), batch_size)]
    start, count = indptr[users], indptr[users + 1] - indptr[users]
    pos = indices[start + (rng.random(batch_size) * count).astype(np.int64)]
    keys = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * num_items + indices
    neg = rng.integers(0, num_items, (batch_size, num_negatives))
    for _ in range(100):                                       # rejection of training items
        probe = users[:, None].astype(np.int64) * num_items + neg
        loc = np.clip(np.searchsorted(keys, probe), 0, len(keys) - 1)
        bad = keys[loc] == probe
        if not bad.any():
            break
        neg[bad] = rng.integers(0, num_items, int(bad.sum()))
    return users.astype(np.int32), pos.astype(np.int32), neg.astype(np.int32)


class Recommendation:
    def __init__(self, config, data: recsys_data.Interactions | None = None):
        self.config = config
        m, d = config.model, config.data
        self.data = data if data is not None else recsys_data.load(d.name, d.get("data_dir") or None)
        self.name = m.name
        U, I = self.data.num_users, self.data.num_items
        self.k = int(d.get("k", 20))
        self.batch_size = int(config.train.batch_size)
        self.indptr, self.indices = self.data.csr("train")
        if self.name == "lightgcn":
            self.model = recsys.LightGCN(U, I, dim=int(m.dim), num_layers=int(m.num_layers),
                                         init_std=float(m.init_std))
            self.graph = G.to_arrays(recsys.bipartite_graph(self.data.train_users, self.data.train_items, U, I))
            self.num_negatives = 1
        elif self.name == "ultragcn":
            self.model = recsys.UltraGCN(U, I, dim=int(m.dim), init_std=float(m.init_std))
            c = recsys.ultragcn_constraints(self.data.train_users, self.data.train_items, U, I,
                                            int(m.num_neighbors))
            self.graph = c
            self.num_negatives = int(m.num_negatives)
        else:
            raise ValueError(f"unknown recommendation model {self.name!r}; set model.name to lightgcn or ultragcn")
        self._embed = jax.jit(self._embeddings)
        self._metrics = jax.jit(self._chunk_metrics)

    # -- trainer protocol --------------------------------------------------------------------------
    def _graph_args(self, graph):
        if self.name == "lightgcn":
            return (G.from_arrays(graph),)
        return ()

    def init_variables(self, rng):
        g = {k: jnp.asarray(v) for k, v in self.graph.items()}
        return self.model.init(rng, *self._graph_args(g))

    def batch_axes(self):
        return {"users": ("batch",), "pos": ("batch",), "neg": ("batch", None),
                "graph": {k: None for k in self.graph}}

    def global_batch_size(self):
        return self.batch_size

    def train_batch(self, step, process_index, process_count):
        u, p, n = bpr_triples(self.config.seed, step, self.batch_size, self.indptr, self.indices,
                              self.data.num_items, self.num_negatives)
        rows = self.batch_size // process_count
        sl = slice(process_index * rows, (process_index + 1) * rows)
        return {"users": u[sl], "pos": p[sl], "neg": n[sl], "graph": self.graph}

    def loss_fn(self, params, model_state, batch, rng, train):
        m = self.config.model
        out = self.model.apply({"params": params}, *self._graph_args(batch["graph"]))
        u, p, n = batch["users"], batch["pos"], batch["neg"]
        if self.name == "lightgcn":
            loss, bpr = recsys.bpr_loss(out["users"][u], out["items"][p], out["items"][n[:, 0]], float(m.reg),
                                        out["users0"][u], out["items0"][p], out["items0"][n[:, 0]])
            metrics = {"bpr": bpr}
        else:
            g = batch["graph"]
            loss, metrics = recsys.ultragcn_loss(
                out["users"], out["items"], u, p, n, g["beta_user"], g["beta_item"],
                g["ii_neighbors"], g["ii_weights"], lam=float(m.lam), gamma=float(m.gamma),
                neg_weight=float(m.neg_weight), reg=float(m.reg))
        return loss, (metrics, model_state)

    # -- evaluation --------------------------------------------------------------------------------
    def _embeddings(self, params, graph):
        out = self.model.apply({"params": params}, *self._graph_args(graph))
        return out["users"], out["items"]

    def _chunk_metrics(self, user_emb, item_emb, users, train_mask, test_mask):
        scores = user_emb[users] @ item_emb.T
        recall, ndcg, has = recsys.recall_ndcg_at_k(scores, train_mask, test_mask, self.k)
        return recall.sum(), ndcg.sum(), has.sum()

    def rank_metrics(self, params):
        """Recall@k and NDCG@k over all users with test items (training items masked)."""
        user_emb, item_emb = self._embed(params, {k: jnp.asarray(v) for k, v in self.graph.items()})
        test_ptr, test_idx = self.data.csr("test")
        users = np.nonzero(np.diff(test_ptr) > 0)[0]
        chunk = int(self.config.data.get("eval_users_per_chunk", 1024))
        I = self.data.num_items
        tot = np.zeros(3)
        for start in range(0, len(users), chunk):
            part = users[start:start + chunk]
            pad = np.zeros(chunk, np.int64)
            pad[:len(part)] = part
            train_mask = np.zeros((chunk, I), bool)
            test_mask = np.zeros((chunk, I), bool)
            for row, u in enumerate(part):
                train_mask[row, self.indices[self.indptr[u]:self.indptr[u + 1]]] = True
                test_mask[row, test_idx[test_ptr[u]:test_ptr[u + 1]]] = True
            r, n, h = self._metrics(user_emb, item_emb, pad.astype(np.int32), train_mask, test_mask)
            tot += [float(r), float(n), float(h)]
        return {f"recall@{self.k}": tot[0] / tot[2], f"ndcg@{self.k}": tot[1] / tot[2]}

    def evaluate(self, params, model_state, step, workdir):
        return self.rank_metrics(params), {}


# ==================================================================================================
# Until netlab/graph/task.py can build models registered elsewhere, the tasks for this helper's other
# papers live here: GRAND / Neural Sheaf Diffusion node classification, and DIGRAC on a DSBM.
# ==================================================================================================
def _node_classification_base():
    from netlab.graph import task as graph_task
    return graph_task.NodeClassification


def build_diffusion_model(name: str, num_classes: int, **kw):
    """GRAND (`grand`) or Neural Sheaf Diffusion (`nsd`) from plain keyword hyperparameters."""
    from netlab.graph import grand, sheaf
    if name == "grand":
        return grand.GRAND(num_classes=num_classes, **kw)
    if name == "nsd":
        return sheaf.NeuralSheafDiffusion(num_classes=num_classes, **kw)
    raise ValueError(f"unknown diffusion model {name!r}; set model.name to grand or nsd")


class DiffusionNodeClassification(_node_classification_base()):
    """netlab.graph.task.NodeClassification with a GRAND or NSD model (config.model.name grand | nsd);
    loss, batches and evaluation are the parent's (full batch, masked cross-entropy, val/test accuracy)."""

    def __init__(self, config, dataset=None):
        from netlab.graph import datasets as D
        from netlab.graph import graphs as G
        self.config = config
        d = config.data
        root = d.get("data_dir") or d.get("dir") or None
        self.dataset = dataset if dataset is not None else D.load(d.name, root, int(d.get("split", 0)))
        ds = self.dataset
        budget = G.Budget(ds.num_nodes + 1, G._round_up(max(ds.num_edges, 1), 8), 2)
        graph = ds.graph(budget, row_normalize=bool(d.get("row_normalize", True)))
        kw = dict(config.model)
        name = kw.pop("name")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
        self.model = build_diffusion_model(name, ds.num_classes, **kw)
        pad = lambda m: np.concatenate([m, np.zeros(budget.n_node - len(m), m.dtype)])  # noqa: E731
        self.arrays = dict(G.to_arrays(graph))
        self.arrays.update(y=pad(ds.y.astype(np.int32)), train_mask=pad(ds.train_mask))
        self.eval_masks = {"train": pad(ds.train_mask), "val": pad(ds.val_mask), "test": pad(ds.test_mask)}
        self.edge_sharded = False
        self.weight_decay = float(config.get("loss", {}).get("weight_decay", 0.0))
        self.wd_scope = str(config.get("loss", {}).get("weight_decay_scope", ""))
        self._predict = jax.jit(self.logits)


class DigraphClustering:
    """DIGRAC on a generated DSBM (config.data: n, k, p, eta, style, ambient, size_ratio, graph_seed):
    unsupervised training on the probabilistic flow-imbalance loss, ARI of argmax P as evaluation."""

    def __init__(self, config):
        from netlab.graph import digrac, generators
        from netlab.graph import graphs as G
        self.config = config
        d, m = config.data, config.model
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

    def _graphs(self, a):
        from netlab.graph import graphs as G
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
        from netlab.graph import digrac
        src, tgt = self._graphs(batch)
        P, _ = self.model.apply({"params": params}, src, tgt, batch["x"], train=train, rngs={"dropout": rng})
        loss = digrac.imbalance_loss(P, digrac.adjacency_matmul(src, P), digrac.total_degree(src), self.beta,
                                     self.normalisation)
        return loss, ({"imbalance": 1.0 - loss}, model_state)

    def _assign(self, params, arrays):
        src, tgt = self._graphs(arrays)
        return self.model.apply({"params": params}, src, tgt, arrays["x"])[0].argmax(-1)

    def evaluate(self, params, model_state, step, workdir):
        from netlab.graph import digrac
        pred = np.asarray(self._predict(params, self.arrays))[:self.n]
        return {"ari": digrac.adjusted_rand_index(self.labels, pred)}, {}

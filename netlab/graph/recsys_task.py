"""Recommendation task (LightGCN / UltraGCN on LastFM or Gowalla) for the netlab trainer
(`task = "graph.recommendation"`).

Config (see configs/graph/recsys.py):
    model.name        "lightgcn" | "ultragcn"; model.dim, model.num_layers, model.init_std,
                      model.reg (L2 on batch embeddings), UltraGCN: model.lam, model.gamma,
                      model.neg_weight, model.num_negatives, model.num_neighbors
    data.name         "lastfm" | "gowalla";
    data.data_dir     "" -> $NETLAB_DATA_DIR, the cache, a download (docs/data.md)
    data.k            cut-off of Recall@k / NDCG@k (20);  data.eval_users_per_chunk
                      (any other data.* key is a config error)
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

from netlab.errors import UserError
from netlab.graph import builder, lightgcn, padding, recsys, recsys_data, ultragcn
from netlab.graph import datasets as D
from netlab.graph import graphs as G

DATA_KEYS = ("name", "data_dir", "k", "eval_users_per_chunk")
# model.* keys the task reads itself (loss weights and sampling), not model fields.
LOSS_KEYS = ("reg", "lam", "gamma", "neg_weight", "num_negatives", "num_neighbors", "num_layers")


def bpr_triples(
    seed: int, step: int, batch_size: int, indptr, indices, num_items: int, num_negatives: int = 1
):
    """(users[B], pos[B], neg[B, M]) for `step`; identical on every process for the same inputs."""
    rng = np.random.default_rng([int(seed), int(step), 0x42])
    active = np.nonzero(np.diff(indptr) > 0)[0]
    users = active[rng.integers(0, len(active), batch_size)]
    start, count = indptr[users], indptr[users + 1] - indptr[users]
    pos = indices[start + (rng.random(batch_size) * count).astype(np.int64)]
    keys = (
        np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * num_items + indices
    )
    neg = rng.integers(0, num_items, (batch_size, num_negatives))
    for _ in range(100):  # rejection of training items
        probe = users[:, None].astype(np.int64) * num_items + neg
        loc = np.clip(np.searchsorted(keys, probe), 0, len(keys) - 1)
        bad = keys[loc] == probe
        if not bad.any():
            break
        neg[bad] = rng.integers(0, num_items, int(bad.sum()))
    return users.astype(np.int32), pos.astype(np.int32), neg.astype(np.int32)


class Recommendation:
    """BPR training of LightGCN or the UltraGCN objective (``model.name``); Recall@k / NDCG@k.
    ``data=`` replaces the configured interactions (tests)."""

    def __init__(self, config, policy=None, *, data: recsys_data.Interactions | None = None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        fdt = builder.float_dtype(self.policy)
        m, d = config.model, config.data
        D.check_data_keys(d, DATA_KEYS, "Recommendation")
        spec = builder.model_spec(config, self.policy, "recsys", consumed=LOSS_KEYS)
        if not issubclass(spec.cls, (lightgcn.LightGCN, ultragcn.UltraGCN)):
            raise UserError(
                f"model.name={spec.name!r}: graph.recommendation trains lightgcn or "
                "ultragcn (their losses live in this task)"
            )
        root = D.default_root(d.get("data_dir", ""))
        self.data = data if data is not None else recsys_data.load(d.name, root)
        self.name = "lightgcn" if issubclass(spec.cls, lightgcn.LightGCN) else "ultragcn"
        U, I = self.data.num_users, self.data.num_items
        self.k = int(d.get("k", 20))
        self.batch_size = int(config.train.batch_size)
        self.indptr, self.indices = self.data.csr("train")
        self.model = spec(num_users=U, num_items=I)
        users, items = self.data.train_users, self.data.train_items
        if self.name == "lightgcn":
            self.graph = padding.to_arrays(lightgcn.bipartite_graph(users, items, U, I, fdt))
            self.num_negatives = 1
        else:
            self.graph = ultragcn.ultragcn_constraints(
                users, items, U, I, int(m.num_neighbors), dtype=fdt
            )
            self.num_negatives = int(m.num_negatives)
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
        return {
            "users": ("batch",),
            "pos": ("batch",),
            "neg": ("batch", None),
            "graph": {k: None for k in self.graph},
        }

    def global_batch_size(self):
        return self.batch_size

    def train_batch(self, step):
        u, p, n = bpr_triples(
            self.config.seed,
            step,
            self.batch_size,
            self.indptr,
            self.indices,
            self.data.num_items,
            self.num_negatives,
        )
        return {"users": u, "pos": p, "neg": n, "graph": self.graph}

    def loss_fn(self, params, model_state, batch, rng, train):
        m = self.config.model
        out = self.model.apply({"params": params}, *self._graph_args(batch["graph"]))
        u, p, n = batch["users"], batch["pos"], batch["neg"]
        if self.name == "lightgcn":
            loss, bpr = lightgcn.bpr_loss(
                out["users"][u],
                out["items"][p],
                out["items"][n[:, 0]],
                float(m.reg),
                out["users0"][u],
                out["items0"][p],
                out["items0"][n[:, 0]],
            )
            metrics = {"bpr": bpr}
        else:
            g = batch["graph"]
            loss, metrics = ultragcn.ultragcn_loss(
                out["users"],
                out["items"],
                u,
                p,
                n,
                g["beta_user"],
                g["beta_item"],
                g["ii_neighbors"],
                g["ii_weights"],
                lam=float(m.lam),
                gamma=float(m.gamma),
                neg_weight=float(m.neg_weight),
                reg=float(m.reg),
            )
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
            part = users[start : start + chunk]
            pad = np.zeros(chunk, np.int64)
            pad[: len(part)] = part
            train_mask = np.zeros((chunk, I), bool)
            test_mask = np.zeros((chunk, I), bool)
            for row, u in enumerate(part):
                train_mask[row, self.indices[self.indptr[u] : self.indptr[u + 1]]] = True
                test_mask[row, test_idx[test_ptr[u] : test_ptr[u + 1]]] = True
            r, n, h = self._metrics(user_emb, item_emb, pad.astype(np.int32), train_mask, test_mask)
            tot += [float(r), float(n), float(h)]
        return {f"recall@{self.k}": tot[0] / tot[2], f"ndcg@{self.k}": tot[1] / tot[2]}

    def evaluate(self, params, model_state, step, workdir):
        return self.rank_metrics(params), {}

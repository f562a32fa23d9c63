"""Recommendation data: Gowalla and LastFM as split by LightGCN (He et al., SIGIR 2020).

Files (from gusye1234/LightGCN-PyTorch `data/`; `lightgcn/` in the data-folder layout):

- Gowalla: `lightgcn/gowalla/s_adj_mat.npz`, a scipy CSR 0/1 adjacency of the (users + items)
  bipartite graph built from the training interactions (29,858 users then 40,981 items); training
  pairs are the nonzeros of the upper-right block `A[:U, U:]`. `test.txt`: one line per user,
  `user item item ...`.
- LastFM: `lightgcn/lastfm/data1.txt` (train) and `test1.txt`, tab-separated `user item weight`
  with 1-based ids; 1,892 users, 4,489 items.

Files come through the dataset registry (`netlab.data.registry`): the `data_dir` argument
(`config.data.data_dir`), then `$NETLAB_DATA_DIR`, then the download cache, else a verified download
into the cache (docs/data.md). Each file is checked against the catalog's SHA-256; a missing or
altered file raises the registry's one-line `UserError` naming the dataset, file and URL.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from netlab.data import registry
from netlab.errors import UserError

DATASETS = ("lastfm", "gowalla")
FILES = {
    "lastfm": ("lightgcn/lastfm/data1.txt", "lightgcn/lastfm/test1.txt"),
    "gowalla": ("lightgcn/gowalla/s_adj_mat.npz", "lightgcn/gowalla/test.txt"),
}
LASTFM_USERS, LASTFM_ITEMS = 1892, 4489
GOWALLA_USERS, GOWALLA_ITEMS = 29858, 40981


@dataclasses.dataclass(frozen=True)
class Interactions:
    """A user-item split. Pairs are int32 arrays sorted by (user, item); test lists are CSR."""

    name: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray

    def csr(self, which: str = "train"):
        """(indptr[num_users+1], indices) of the user -> items lists of `which` (train | test)."""
        u = self.train_users if which == "train" else self.test_users
        i = self.train_items if which == "train" else self.test_items
        counts = np.bincount(u, minlength=self.num_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return indptr, i


def data_root(data_dir=None) -> pathlib.Path:
    """The first folder the registry searches: ``data_dir``, else $NETLAB_DATA_DIR, else the
    cache; a named folder that does not exist is a one-line error."""
    return registry.search_dirs(data_dir)[0][1]


def verified_path(root, rel: str, name: str = "") -> pathlib.Path:
    """The verified local path of ``rel`` (looked up in ``root`` first, then as the registry
    resolves it)."""
    name = name or rel.split("/")[1]
    return registry.locate(name, rel, root)


def _sorted_pairs(u, i):
    u, i = np.asarray(u, np.int64), np.asarray(i, np.int64)
    order = np.lexsort((i, u))
    return u[order].astype(np.int32), i[order].astype(np.int32)


def _read_triples(path):
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)  # the weight column has floats like 3.2e+05
    return rows[:, 0].astype(np.int64) - 1, rows[:, 1].astype(np.int64) - 1


def load_lastfm(data_dir=None) -> Interactions:
    train_path, test_path = (verified_path(data_dir, rel, "lastfm") for rel in FILES["lastfm"])
    tu, ti = _sorted_pairs(*_read_triples(train_path))
    su, si = _sorted_pairs(*_read_triples(test_path))
    return Interactions("lastfm", LASTFM_USERS, LASTFM_ITEMS, tu, ti, su, si)


def load_gowalla(data_dir=None) -> Interactions:
    import scipy.sparse as sp

    adj_path, test_path = (verified_path(data_dir, rel, "gowalla") for rel in FILES["gowalla"])
    adj = sp.load_npz(adj_path).tocsr()
    n_users = GOWALLA_USERS
    n_items = adj.shape[0] - n_users
    block = adj[:n_users, n_users:].tocoo()
    tu, ti = _sorted_pairs(block.row, block.col)
    users, items = [], []
    with open(test_path) as f:
        for line in f:
            ids = line.split()
            if len(ids) > 1:
                users.append(np.full(len(ids) - 1, int(ids[0])))
                items.append(np.asarray(ids[1:], np.int64))
    su, si = _sorted_pairs(np.concatenate(users), np.concatenate(items))
    return Interactions("gowalla", n_users, n_items, tu, ti, su, si)


def load(name: str, data_dir=None) -> Interactions:
    if name == "lastfm":
        return load_lastfm(data_dir)
    if name == "gowalla":
        return load_gowalla(data_dir)
    raise UserError(
        f"unknown recommendation dataset {name!r}; set config.data.name to one of "
        f"{', '.join(DATASETS)}"
    )

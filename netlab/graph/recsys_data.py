"""Offline recommendation data: Gowalla and LastFM as split by LightGCN (He et al., SIGIR 2020).

Files (from gusye1234/LightGCN-PyTorch `data/`, mirrored in `../shared/data/lightgcn/`):

- Gowalla: `lightgcn/gowalla/s_adj_mat.npz`, a scipy CSR 0/1 adjacency of the (users + items)
  bipartite graph built from the training interactions (29,858 users then 40,981 items); training
  pairs are the nonzeros of the upper-right block `A[:U, U:]`. `test.txt`: one line per user,
  `user item item ...`.
- LastFM: `lightgcn/lastfm/data1.txt` (train) and `test1.txt`, tab-separated `user item weight`
  with 1-based ids; 1,892 users, 4,489 items.

Every file read is checked against `SHA256SUMS` at the data root; a missing or altered file raises
a one-line `UserError` naming it. The data root is the `data_dir` argument, else `$NETLAB_DATA_DIR`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import numpy as np

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
    root = data_dir or os.environ.get("NETLAB_DATA_DIR", "")
    if not root:
        raise UserError(
            "no data folder: set config.data.data_dir or NETLAB_DATA_DIR "
            "(e.g. NETLAB_DATA_DIR=../shared/data)"
        )
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise UserError(
            f"data folder {str(root)!r} does not exist; set config.data.data_dir or NETLAB_DATA_DIR"
        )
    return root


def _checksums(root: pathlib.Path) -> dict:
    path = root / "SHA256SUMS"
    if not path.is_file():
        raise UserError(
            f"{path} is missing; the data folder must hold the SHA256SUMS file it ships with"
        )
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(None, 1)
            sums[name.strip().removeprefix("./")] = digest
    return sums


def verified_path(root, rel: str) -> pathlib.Path:
    """`root/rel` after checking it exists and matches its SHA256SUMS entry."""
    root = pathlib.Path(root)
    path = root / rel
    if not path.is_file():
        raise UserError(
            f"missing data file {path}; copy {rel} into the data folder "
            "(see ../shared/data/README.md)"
        )
    expected = _checksums(root).get(rel)
    if expected is None:
        raise UserError(
            f"{rel} has no entry in {root / 'SHA256SUMS'}; add its checksum or restore the file"
        )
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise UserError(
            f"checksum mismatch for {path} (corrupt or altered); restore the original {rel}"
        )
    return path


def _sorted_pairs(u, i):
    u, i = np.asarray(u, np.int64), np.asarray(i, np.int64)
    order = np.lexsort((i, u))
    return u[order].astype(np.int32), i[order].astype(np.int32)


def _read_triples(path):
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)  # the weight column has floats like 3.2e+05
    return rows[:, 0].astype(np.int64) - 1, rows[:, 1].astype(np.int64) - 1


def load_lastfm(data_dir=None) -> Interactions:
    root = data_root(data_dir)
    train_path, test_path = (verified_path(root, rel) for rel in FILES["lastfm"])
    tu, ti = _sorted_pairs(*_read_triples(train_path))
    su, si = _sorted_pairs(*_read_triples(test_path))
    return Interactions("lastfm", LASTFM_USERS, LASTFM_ITEMS, tu, ti, su, si)


def load_gowalla(data_dir=None) -> Interactions:
    import scipy.sparse as sp

    root = data_root(data_dir)
    adj_path, test_path = (verified_path(root, rel) for rel in FILES["gowalla"])
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

"""Graph datasets: karate club, Planetoid Cora/CiteSeer/PubMed (raw files), geom-gcn heterophilic
sets.

Files come through the dataset registry (:mod:`netlab.data.registry`): ``config.data.data_dir``,
then ``$NETLAB_DATA_DIR``, then the download cache, else a verified download into the cache (see
docs/data.md). Every file is checked against the catalog's SHA-256 before it is read; a missing or
corrupt file raises the registry's one-line :class:`netlab.errors.UserError` naming the dataset,
the file, the URL and how to place it by hand. The Planetoid pickles are read with a restricted
unpickler that admits only the numpy/scipy classes (and the ``defaultdict``/``list`` of the
adjacency dict) those files need; anything else is refused.

Every loader returns a :class:`NodeDataset`: features, labels, an undirected edge list with both
directions, no self-loops, no duplicates, sorted by (receiver, sender), and boolean split masks.
OGB / tfds graph datasets are available through :func:`load_ogb_node` for users with network
access (import-guarded: ``ogb`` is not a netlab dependency).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
from typing import Optional

import numpy as np
import scipy.sparse as sp

from netlab.data import registry
from netlab.errors import UserError
from netlab.graph import graphs as G
from netlab.graph import padding

ENV = registry.DATA_DIR_ENV
PLANETOID = ("cora", "citeseer", "pubmed")
GEOM_GCN = ("cornell", "texas", "wisconsin", "film")


@dataclasses.dataclass
class NodeDataset:
    name: str
    x: np.ndarray  # [n, F] float32
    y: np.ndarray  # [n] int32
    senders: np.ndarray  # [E] int32, sorted by (receiver, sender)
    receivers: np.ndarray  # [E] int32
    num_classes: int
    train_mask: np.ndarray  # [n] bool
    val_mask: np.ndarray
    test_mask: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.senders.shape[0])

    def graph(
        self,
        budget: Optional[padding.Budget] = None,
        row_normalize: bool = False,
        edge_multiple: int = 8,
        dtype=np.float32,
    ) -> G.Graph:
        """Padded host :class:`Graph` with features in ``nodes`` and GCN norms precomputed, all
        floats in ``dtype`` (float64 for a float64 run)."""
        x = normalize_features(self.x, dtype) if row_normalize else self.x.astype(dtype)
        if budget is None:
            budget = padding.Budget(
                self.num_nodes + 1, padding.round_up(max(self.num_edges, 1), edge_multiple), 2
            )
        return padding.from_edges(
            self.senders, self.receivers, self.num_nodes, nodes=x, budget=budget, dtype=dtype
        )


def normalize_features(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Row-normalise features to sum 1 (Kipf & Welling's preprocessing; PyG
    ``NormalizeFeatures``), computed and returned in ``dtype``."""
    x = np.asarray(x)
    x = x.astype(np.result_type(x.dtype, dtype))
    s = x.sum(1, keepdims=True)
    return (x / np.where(s == 0, 1, s)).astype(dtype)


# ------------------------------------------------------------------------------------------------
# Folder, checksums.
# ------------------------------------------------------------------------------------------------


def default_root(configured: str = "") -> Optional[str]:
    """The folder the tasks pass to the loaders: ``config.data.data_dir`` if set, else None
    (the registry then tries $NETLAB_DATA_DIR, the cache, a download)."""
    return configured or None


def check_data_keys(data_config, allowed, task: str) -> None:
    """Refuse ``config.data`` keys a task does not read (e.g. ``data.dir`` for ``data.data_dir``):
    a one-line :class:`UserError` naming the closest valid key, instead of silently ignoring it."""
    import difflib

    unknown = [k for k in data_config.keys() if k not in allowed]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
        hint = (
            f"; did you mean 'data.{close[0]}'?" if close else f"; valid keys: {', '.join(allowed)}"
        )
        raise UserError(f"unknown config key 'data.{key}' for {task}{hint}")


def read_verified(dataset: str, rel: str, root=None) -> bytes:
    """Bytes of file ``rel`` of ``dataset`` after its SHA-256 check (downloaded if needed)."""
    return registry.locate(dataset, rel, root).read_bytes()


# ------------------------------------------------------------------------------------------------
# Restricted unpickling (Planetoid's Python-2 pickles).
# ------------------------------------------------------------------------------------------------


def _allowed():
    from numpy._core import multiarray

    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): multiarray.scalar,
        ("scipy.sparse.csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse._csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse", "csr_matrix"): sp.csr_matrix,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "list"): list,
        ("__builtin__", "list"): list,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only an allow-list of numpy/scipy classes (no code execution)."""

    def __init__(self, file, source: str = "pickle"):
        super().__init__(file, encoding="latin1", fix_imports=False)
        self.source = source
        self.allowed = _allowed()

    def find_class(self, module, name):
        key = (module, name)
        if key not in self.allowed:
            raise UserError(
                f"refusing to unpickle {module}.{name} from {self.source}: only numpy/scipy arrays "
                "are allowed in dataset files; the file is not a genuine Planetoid file"
            )
        return self.allowed[key]


def safe_unpickle(data: bytes, source: str = "pickle"):
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except UserError:
        raise
    except Exception as e:  # truncated / garbled pickle
        raise UserError(
            f"cannot read {source}: {type(e).__name__}: {e}; restore the file"
        ) from None


# ------------------------------------------------------------------------------------------------
# Loaders.
# ------------------------------------------------------------------------------------------------


def _undirected(senders, receivers, n):
    s, r, _, _ = padding.canonical_edges(senders, receivers, n, symmetrize=True)
    return s, r


def load_planetoid(name: str, root=None) -> NodeDataset:
    """Planetoid Cora / CiteSeer with the public split (Yang et al. 2016; Kipf & Welling 2017):
    train = the labelled ``x`` rows (20 per class), val = the next 500 ids,
    test = ``test.index``."""
    name = name.lower()
    if name not in PLANETOID:
        raise UserError(f"unknown Planetoid dataset {name!r}; choose one of {', '.join(PLANETOID)}")
    obj = {}
    for part in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        rel = f"planetoid/ind.{name}.{part}"
        obj[part] = safe_unpickle(read_verified(name, rel, root), rel)
    test_idx = np.array(
        [int(v) for v in read_verified(name, f"planetoid/ind.{name}.test.index", root).split()]
    )
    test_sorted = np.sort(test_idx)
    tx, ty = obj["tx"].tolil() if sp.issparse(obj["tx"]) else obj["tx"], obj["ty"]
    if name == "citeseer":  # isolated test ids missing from the files: zero rows for them
        full = np.arange(test_sorted.min(), test_sorted.max() + 1)
        tx_ext = sp.lil_matrix((len(full), tx.shape[1]), dtype=np.float32)
        tx_ext[test_sorted - test_sorted.min(), :] = tx
        ty_ext = np.zeros((len(full), ty.shape[1]), ty.dtype)
        ty_ext[test_sorted - test_sorted.min(), :] = ty
        tx, ty = tx_ext, ty_ext
    x = sp.vstack([sp.csr_matrix(obj["allx"]), sp.csr_matrix(tx)]).tolil()
    x[test_idx, :] = x[test_sorted, :]
    y = np.vstack([obj["ally"], ty])
    y[test_idx, :] = y[test_sorted, :]
    n = x.shape[0]
    pairs = [(int(u), int(v)) for u, nbrs in obj["graph"].items() for v in nbrs]
    s = np.array([p[0] for p in pairs])
    r = np.array([p[1] for p in pairs])
    keep = (s < n) & (r < n)
    s, r = _undirected(s[keep], r[keep], n)
    labels = y.argmax(1).astype(np.int32)
    masks = [np.zeros(n, bool) for _ in range(3)]
    n_train = obj["y"].shape[0]
    masks[0][:n_train] = True
    masks[1][n_train : n_train + 500] = True
    masks[2][test_idx] = True
    return NodeDataset(
        name, np.asarray(x.todense(), np.float32), labels, s, r, int(y.shape[1]), *masks
    )


def load_geom_gcn(name: str, split: int = 0, root=None) -> NodeDataset:
    """Geom-GCN heterophilic sets (Pei et al. 2020) with one of their 10 fixed 48/32/20 splits;
    ``name`` in cornell/texas/wisconsin/film, or cora/citeseer (Planetoid graph, geom-gcn split)."""
    name = name.lower()
    if not 0 <= split < 10:
        raise UserError(f"geom-gcn split {split} out of range; use data.split in 0..9")
    if name in ("cora", "citeseer"):
        base = load_planetoid(name, root)
        dataset, rel = f"geom-{name}", f"geom_gcn/splits_{name}/{name}_split_0.6_0.2_{split}.npz"
    elif name in GEOM_GCN:
        base = _read_geom_gcn(root, name)
        dataset, rel = name, f"geom_gcn/{name}/splits/{name}_split_0.6_0.2_{split}.npz"
    else:
        raise UserError(
            f"unknown geom-gcn dataset {name!r}; choose one of {', '.join(GEOM_GCN)}, cora, "
            "citeseer"
        )
    with np.load(io.BytesIO(read_verified(dataset, rel, root)), allow_pickle=False) as z:
        masks = [np.asarray(z[k]).astype(bool) for k in ("train_mask", "val_mask", "test_mask")]
    return dataclasses.replace(base, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])


def _read_geom_gcn(root, name):
    text = (
        read_verified(name, f"geom_gcn/{name}/out1_node_feature_label.txt", root)
        .decode()
        .splitlines()[1:]
    )
    ids, feats, labels = [], [], []
    for line in text:
        i, f, lab = line.split("\t")
        ids.append(int(i))
        feats.append([int(v) for v in f.split(",")] if f else [])
        labels.append(int(lab))
    n = max(ids) + 1
    if name == "film":  # indices of nonzero features
        x = np.zeros((n, 932), np.float32)
        for i, f in zip(ids, feats):
            x[i, f] = 1.0
    else:
        x = np.zeros((n, len(feats[0])), np.float32)
        for i, f in zip(ids, feats):
            x[i] = f
    y = np.zeros(n, np.int32)
    y[ids] = labels
    edges = read_verified(name, f"geom_gcn/{name}/out1_graph_edges.txt", root)
    edges = edges.decode().splitlines()[1:]
    e = np.array([[int(v) for v in line.split("\t")] for line in edges if line.strip()])
    s, r = _undirected(e[:, 0], e[:, 1], n)
    empty = np.zeros(n, bool)
    return NodeDataset(name, x, y, s, r, int(y.max()) + 1, empty, empty.copy(), empty.copy())


def load_karate(num_train_per_class: int = 1) -> NodeDataset:
    """Zachary's karate club from networkx: 34 nodes, 78 undirected edges, identity features,
    labels = the two clubs after the split; train = the two leaders (nodes 0 and 33),
    test = rest."""
    import networkx as nx

    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    e = np.array(list(g.edges()))
    s, r = _undirected(e[:, 0], e[:, 1], n)
    y = np.array([0 if g.nodes[i]["club"] == "Mr. Hi" else 1 for i in range(n)], np.int32)
    train = np.zeros(n, bool)
    train[[0, 33]] = True
    return NodeDataset("karate", np.eye(n, dtype=np.float32), y, s, r, 2, train, ~train, ~train)


def load(name: str, root=None, split: int = 0) -> NodeDataset:
    """By name: karate, cora, citeseer, pubmed (public split), geom-<name> (geom-gcn split
    ``split``), cornell/texas/wisconsin/film."""
    name = name.lower()
    if name == "karate":
        return load_karate()
    if name in PLANETOID:
        return load_planetoid(name, root)
    if name.startswith("geom-"):
        return load_geom_gcn(name[5:], split, root)
    if name in GEOM_GCN:
        return load_geom_gcn(name, split, root)
    raise UserError(
        f"unknown graph dataset {name!r}; choose karate, cora, citeseer, pubmed, geom-cora, "
        "geom-citeseer, "
        f"{', '.join(GEOM_GCN)} (or load_ogb_node for OGB)"
    )


def load_ogb_node(name: str, root: str) -> NodeDataset:
    """OGB node-property dataset (e.g. ogbn-arxiv) through the ``ogb`` package, for users with
    network access; downloads into ``root``. Not used by tests or CI."""
    try:
        from ogb.nodeproppred import NodePropPredDataset  # noqa: WPS433
    except ImportError:
        raise UserError(
            "OGB datasets need the optional package `ogb` (pip install ogb) and network access"
        ) from None
    ds = NodePropPredDataset(name=name, root=root)
    graph, label = ds[0]
    split = ds.get_idx_split()
    n = int(graph["num_nodes"])
    s, r = _undirected(graph["edge_index"][0], graph["edge_index"][1], n)
    masks = []
    for k in ("train", "valid", "test"):
        m = np.zeros(n, bool)
        m[split[k]] = True
        masks.append(m)
    y = np.asarray(label).reshape(-1).astype(np.int32)
    return NodeDataset(
        name, np.asarray(graph["node_feat"], np.float32), y, s, r, int(y.max()) + 1, *masks
    )

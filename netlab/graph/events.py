"""Continuous-time dynamic graphs as event streams (the data layer of TGN / JODIE / PRES).

An :class:`EventStream` is a time-sorted list of interactions (src, dst, t, features, label), the
form of the JODIE CSVs (Kumar et al., KDD 2019) that TGN (Rossi et al., 2020) trains on.

- :func:`chronological_split`: TGN's protocol (`utils/data_processing.py`): ``val_time`` and
  ``test_time`` are the 0.70 / 0.85 quantiles of the timestamps; train holds t <= val_time, val
  val_time < t <= test_time, test t > test_time, so the three windows never overlap (transductive
  setting only; TGN's inductive new-node masks are not built here).
- :func:`sample_negatives`: TGN's ``RandEdgeSampler``: one destination per positive drawn uniformly
  from the unique destinations of the given stream with a seeded generator, no collision check.
- :func:`pad_batches`: static shapes for ``lax.scan``: [num_batches, batch_size] arrays plus a
  ``mask`` that is False on the padding of the last partial batch.
- :func:`synthetic_stream`: a deterministic generator with a planted temporal motif (below).
- :func:`read_jodie_csv`: the JODIE layout ``user_id,item_id,timestamp,state_label,f_1..f_F``
  (one header line). Users keep their ids, items are shifted by ``max(user) + 1`` so the bipartite
  node sets are disjoint, as TGN's ``preprocess_data.py`` does, but 0-based: padding here is the
  ``mask``, not TGN's reserved node 0. :func:`load_jodie` reads ``wikipedia`` or ``reddit``
  through the dataset registry (datasets ``jodie-wikipedia`` / ``jodie-reddit``, files
  ``jodie/<name>.csv``: ``config.data.data_dir``, ``$NETLAB_DATA_DIR``, the cache, else a
  download from the Stanford SNAP JODIE page, http://snap.stanford.edu/jodie/, the links of the
  JODIE and TGN READMEs). Their SHA-256 and size are not pinned yet (no verified copy was
  available offline): the slots in :data:`JODIE_FILES` take them once one is.
"""

from __future__ import annotations

import dataclasses
import heapq
import pathlib

import numpy as np

from netlab.data import catalog
from netlab.data import registry as data_registry
from netlab.errors import UserError
from netlab.registry import check_range

JODIE_URL = "http://snap.stanford.edu/jodie"
# name -> (sha256, size) of the published CSV; None: not pinned (downloaded and read unverified).
JODIE_FILES = {"wikipedia": (None, None), "reddit": (None, None)}
for _name, (_sha, _size) in JODIE_FILES.items():
    if f"jodie-{_name}" not in data_registry.names():
        data_registry.register(
            catalog.Dataset(
                f"jodie-{_name}",
                (catalog.File(f"jodie/{_name}.csv", f"{JODIE_URL}/{_name}.csv", _sha, _size),),
                f"JODIE {_name} interaction stream (Kumar et al., KDD 2019), TGN's benchmark",
            )
        )


@dataclasses.dataclass(frozen=True)
class EventStream:
    """Events sorted by time: src, dst int32 [E]; t float64 [E]; feat float32 [E, F]; label [E]."""

    num_nodes: int
    src: np.ndarray
    dst: np.ndarray
    t: np.ndarray
    feat: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.src)

    def select(self, keep) -> EventStream:
        """The events where the boolean (or index) array ``keep`` selects, order kept."""
        return dataclasses.replace(
            self,
            src=self.src[keep],
            dst=self.dst[keep],
            t=self.t[keep],
            feat=self.feat[keep],
            label=self.label[keep],
        )


def make_stream(src, dst, t, feat=None, label=None, num_nodes=None) -> EventStream:
    """An :class:`EventStream` from arrays, stably sorted by time (ties keep their order)."""
    src, dst = np.asarray(src, np.int32), np.asarray(dst, np.int32)
    t = np.asarray(t, np.float64)
    feat = np.zeros((len(t), 0), np.float32) if feat is None else np.asarray(feat, np.float32)
    label = np.zeros(len(t), np.int32) if label is None else np.asarray(label, np.int32)
    n = int(max(src.max(initial=-1), dst.max(initial=-1)) + 1) if num_nodes is None else num_nodes
    order = np.argsort(t, kind="stable")
    return EventStream(n, src[order], dst[order], t[order], feat[order], label[order])


def chronological_split(stream: EventStream, val_quantile=0.70, test_quantile=0.85):
    """(train, val, test) by time quantiles; every train time < every val time < every test time."""
    check_range("data.val_quantile", val_quantile, 0.0, 1.0)
    check_range("data.test_quantile", test_quantile, val_quantile, 1.0)
    val_time, test_time = np.quantile(stream.t, [val_quantile, test_quantile])
    t = stream.t
    return (
        stream.select(t <= val_time),
        stream.select((t > val_time) & (t <= test_time)),
        stream.select(t > test_time),
    )


def sample_negatives(stream: EventStream, count: int, seed: int) -> np.ndarray:
    """``count`` random destinations (int32) drawn uniformly from the stream's unique ones."""
    pool = np.unique(stream.dst)
    return np.random.default_rng(seed).choice(pool, size=count).astype(np.int32)


def pad_batches(stream: EventStream, batch_size: int, neg=None) -> dict:
    """Consecutive batches of ``batch_size`` events as arrays [num_batches, batch_size(, F)].

    Keys src, dst, neg (int32), t (float32), feat (float32), mask (bool). Padding slots copy node 0
    and the last real time with zero features; models must ignore them through ``mask``.
    """
    check_range("data.batch_size", batch_size, 1, None)
    e = len(stream)
    nb = max(1, -(-e // batch_size))
    pad = nb * batch_size - e
    neg = np.zeros(e, np.int32) if neg is None else np.asarray(neg, np.int32)
    t_pad = stream.t[-1] if e else 0.0

    def fill(x, value):
        tail = np.full((pad, *x.shape[1:]), value, x.dtype)
        return np.concatenate([x, tail]).reshape(nb, batch_size, *x.shape[1:])

    return {
        "src": fill(stream.src, 0),
        "dst": fill(stream.dst, 0),
        "neg": fill(neg, 0),
        "t": fill(stream.t.astype(np.float32), np.float32(t_pad)),
        "feat": fill(stream.feat, 0.0),
        "mask": fill(np.ones(e, bool), False),
    }


def synthetic_stream(
    num_nodes=32, num_events=256, feat_dim=4, motif_prob=0.5, delay=0.5, seed=0
) -> tuple:
    """A deterministic stream with a planted "triadic follow-up" motif, and which events it planted.

    Random events (a, b) arrive as a Poisson process of rate 1 (a != b uniform). After any event
    (a, u, t) where u's previous partner w is not a, with probability ``motif_prob`` the event
    (a, w) is scheduled at t + delay * U(0, 1): a node that met u soon meets u's last partner.
    A memory model can predict these; a static one cannot. Returns (stream, planted bool [E]).
    """
    check_range("data.num_nodes", num_nodes, 3, None)
    check_range("data.motif_prob", motif_prob, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    last = np.full(num_nodes, -1)
    pending: list = []  # heap of (time, sequence, src, dst)
    rows, planted = [], []
    t_next = rng.exponential(1.0)
    while len(rows) < num_events:
        if pending and pending[0][0] <= t_next:
            t, _, a, u = heapq.heappop(pending)
            planted.append(True)
        else:
            t, a = t_next, int(rng.integers(num_nodes))
            u = int((a + rng.integers(1, num_nodes)) % num_nodes)
            t_next = t + rng.exponential(1.0)
            planted.append(False)
        w = last[u]
        if w >= 0 and w != a and rng.random() < motif_prob:
            heapq.heappush(pending, (t + delay * rng.random(), len(rows), a, int(w)))
        last[a], last[u] = u, a
        rows.append((a, u, t))
    src, dst, t = (np.array(c) for c in zip(*rows))
    feat = rng.normal(size=(num_events, feat_dim)).astype(np.float32)
    return make_stream(src, dst, t, feat, num_nodes=num_nodes), np.array(planted)


def read_jodie_csv(path) -> EventStream:
    """A JODIE CSV (Wikipedia / Reddit layout) as a bipartite stream; label = state_label."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"JODIE CSV {path} not found: pass the path of e.g. wikipedia.csv")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    if data.shape[1] < 4:
        raise UserError(f"{path}: expected user,item,timestamp,state_label,features... per row")
    users, items = data[:, 0].astype(np.int64), data[:, 1].astype(np.int64)
    offset = int(users.max()) + 1
    return make_stream(
        users,
        items + offset,
        data[:, 2],
        data[:, 4:],
        data[:, 3].astype(np.int32),
        num_nodes=offset + int(items.max()) + 1,
    )


def load_jodie(name: str, data_dir=None) -> EventStream:
    """The JODIE ``wikipedia`` or ``reddit`` stream through the dataset registry (module
    docstring); a missing file is the registry's one-line error naming the URL."""
    if name not in JODIE_FILES:
        raise UserError(f"JODIE dataset {name!r}; choose one of {', '.join(JODIE_FILES)}")
    return read_jodie_csv(data_registry.locate(f"jodie-{name}", f"jodie/{name}.csv", data_dir))


__all__ = [
    "EventStream",
    "JODIE_FILES",
    "JODIE_URL",
    "chronological_split",
    "load_jodie",
    "make_stream",
    "pad_batches",
    "read_jodie_csv",
    "sample_negatives",
    "synthetic_stream",
]

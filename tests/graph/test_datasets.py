"""Offline dataset loaders: published statistics, splits, checksums and the restricted unpickler."""

import hashlib
import os
import pickle
import shutil

import numpy as np
import pytest

from netlab.errors import UserError
from netlab.graph import datasets as D


@pytest.mark.parametrize(
    "name,n,f,c,e,train",
    [("cora", 2708, 1433, 7, 10556, 140), ("citeseer", 3327, 3703, 6, 9104, 120)],
)
def test_planetoid_statistics_and_public_split(shared_data_dir, name, n, f, c, e, train):
    ds = D.load_planetoid(name, shared_data_dir)
    assert ds.x.shape == (n, f) and ds.num_classes == c and ds.num_edges == e
    assert ds.y.min() == 0 and ds.y.max() == c - 1
    assert np.all(ds.senders != ds.receivers)
    pairs = set(zip(ds.senders.tolist(), ds.receivers.tolist()))
    assert all((r, s) in pairs for s, r in pairs)  # undirected: both directions present
    assert (ds.train_mask.sum(), ds.val_mask.sum(), ds.test_mask.sum()) == (train, 500, 1000)
    assert not np.any(ds.train_mask & ds.val_mask) and not np.any(ds.val_mask & ds.test_mask)
    assert np.all(
        np.bincount(ds.y[ds.train_mask], minlength=c) == 20
    )  # 20 labelled nodes per class
    g = ds.graph()
    assert g.sorted_receivers and g.num_nodes == n + 1


def test_geom_gcn_sets_and_splits(shared_data_dir):
    ds = D.load_geom_gcn("texas", 0, shared_data_dir)
    assert ds.num_nodes == 183 and ds.num_classes == 5 and ds.x.shape[1] == 1703
    assert (ds.train_mask.sum(), ds.val_mask.sum(), ds.test_mask.sum()) == (87, 59, 37)
    assert not np.any(ds.train_mask & ds.test_mask)
    other = D.load_geom_gcn("texas", 3, shared_data_dir)
    assert not np.array_equal(ds.train_mask, other.train_mask)
    cora = D.load_geom_gcn("cora", 0, shared_data_dir)
    assert (cora.train_mask.sum(), cora.val_mask.sum(), cora.test_mask.sum()) == (1192, 796, 497)


def test_karate():
    ds = D.load_karate()
    assert ds.num_nodes == 34 and ds.num_edges == 156 and set(ds.y.tolist()) == {0, 1}
    assert ds.y[0] != ds.y[33]


def _copy_planetoid(src, dst, name="cora"):
    (dst / "planetoid").mkdir(parents=True)
    lines = []
    for p in sorted((src / "planetoid").glob(f"ind.{name}.*")):
        shutil.copy(p, dst / "planetoid" / p.name)
    for line in (src / "SHA256SUMS").read_text().splitlines():
        if f"ind.{name}." in line:
            lines.append(line)
    (dst / "SHA256SUMS").write_text("\n".join(lines) + "\n")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Evil.marker),))


def test_malicious_pickle_is_refused(shared_data_dir, tmp_path):
    root = tmp_path / "data"
    _copy_planetoid(shared_data_dir, root)
    _Evil.marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(), protocol=2)
    (root / "planetoid" / "ind.cora.x").write_bytes(payload)
    sums = (root / "SHA256SUMS").read_text().splitlines()
    digest = hashlib.sha256(payload).hexdigest()
    sums = [
        f"{digest}  ./planetoid/ind.cora.x" if line.endswith("ind.cora.x") else line
        for line in sums
    ]
    (root / "SHA256SUMS").write_text(
        "\n".join(sums) + "\n"
    )  # checksum matches: the unpickler must refuse
    with pytest.raises(UserError, match="refusing to unpickle .*system") as err:
        D.load_planetoid("cora", root)
    assert "\n" not in str(err.value)
    assert not _Evil.marker.exists()


def test_corrupt_and_missing_files_are_refused(shared_data_dir, tmp_path):
    root = tmp_path / "data"
    _copy_planetoid(shared_data_dir, root)
    p = root / "planetoid" / "ind.cora.graph"
    data = bytearray(p.read_bytes())
    data[100] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum mismatch for .*ind.cora.graph"):
        D.load_planetoid("cora", root)
    p.unlink()
    with pytest.raises(UserError, match="missing data file .*ind.cora.graph"):
        D.load_planetoid("cora", root)


def test_data_dir_from_env(monkeypatch, shared_data_dir):
    monkeypatch.delenv(D.ENV, raising=False)
    with pytest.raises(UserError, match=r"config\.data\.data_dir or the NETLAB_DATA_DIR"):
        D.data_dir(None)
    monkeypatch.setenv(D.ENV, str(shared_data_dir))
    assert D.data_dir(None) == shared_data_dir.resolve()

"""Offline dataset loaders: published statistics, splits, checksums and the restricted unpickler."""

import os
import pickle
import re
import shutil

import numpy as np
import pytest

from netlab.data import registry
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
    for p in sorted((src / "planetoid").glob(f"ind.{name}.*")):
        shutil.copy(p, dst / "planetoid" / p.name)
        (dst / "planetoid" / p.name).chmod(0o644)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Evil.marker),))


def test_malicious_pickle_is_refused(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(), protocol=2)
    with pytest.raises(UserError, match="refusing to unpickle .*system") as err:
        D.safe_unpickle(payload, "planetoid/ind.cora.x")
    assert "\n" not in str(err.value)
    assert not _Evil.marker.exists()


def test_corrupt_and_missing_files_are_refused(shared_data_dir, tmp_path, monkeypatch):
    """A corrupt file in config.data.data_dir is refused (not replaced); a missing one, with no
    other folder holding it and downloads off, is the registry's one-line error."""
    root = tmp_path / "data"
    _copy_planetoid(shared_data_dir, root)
    monkeypatch.delenv(D.ENV, raising=False)
    monkeypatch.setenv("NETLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NETLAB_OFFLINE", "1")
    p = root / "planetoid" / "ind.cora.graph"
    data = bytearray(p.read_bytes())
    data[100] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="dataset 'cora': checksum mismatch for .*ind.cora.graph"):
        D.load_planetoid("cora", root)
    p.unlink()
    with pytest.raises(UserError, match="dataset 'cora': missing data file .*ind.cora.graph") as e:
        D.load_planetoid("cora", root)
    assert "\n" not in str(e.value) and "kimiyoung/planetoid" in str(e.value)
    assert "shared" not in str(e.value)
    assert not (tmp_path / "cache" / "planetoid" / "ind.cora.graph").exists()


def test_data_dir_resolution_order(monkeypatch, shared_data_dir, tmp_path):
    """config.data.data_dir, then $NETLAB_DATA_DIR, then the cache; a named folder that does not
    exist is an error, not a silent fallback."""
    cache, mine = tmp_path / "cache", tmp_path / "mine"
    _copy_planetoid(shared_data_dir, mine)
    monkeypatch.setenv("NETLAB_CACHE", str(cache))
    monkeypatch.setenv(D.ENV, str(shared_data_dir))
    rel = "planetoid/ind.cora.y"
    assert registry.locate("cora", rel, mine) == mine / rel
    assert registry.locate("cora", rel) == shared_data_dir / rel
    monkeypatch.delenv(D.ENV)
    _copy_planetoid(shared_data_dir, cache)
    assert registry.locate("cora", rel) == cache / rel
    with pytest.raises(UserError, match=r"config\.data\.data_dir='.*nope' is not a folder"):
        registry.locate("cora", rel, tmp_path / "nope")
    monkeypatch.setenv(D.ENV, str(tmp_path / "nope"))
    with pytest.raises(UserError, match="NETLAB_DATA_DIR='.*nope' is not a folder"):
        D.load_planetoid("cora")


def test_every_loader_words_missing_data_the_same(tmp_path, monkeypatch):
    """Planetoid, geom-gcn and LightGCN loaders give the registry's one line: dataset, file, URL,
    how to place it by hand; and nothing outside the repository is named."""
    from netlab.graph import recsys_data

    monkeypatch.delenv(D.ENV, raising=False)
    monkeypatch.setenv("NETLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NETLAB_OFFLINE", "1")
    shape = (
        r"dataset '{}': missing data file {}: downloads are off \(NETLAB_OFFLINE=1\), not fetched "
        r"from https://\S+; place the file by hand at {}/\S+ \(or at <folder>/\S+ with "
        r"config.data.data_dir or NETLAB_DATA_DIR naming <folder>\), or run `python -m "
        r"netlab.data fetch {}` where the network is reachable \(see docs/data.md\)"
    )
    for load, name, rel in [
        (lambda: D.load("cora"), "cora", "planetoid/ind.cora.x"),
        (lambda: D.load("texas"), "texas", "geom_gcn/texas/out1_node_feature_label.txt"),
        (lambda: recsys_data.load("lastfm"), "lastfm", "lightgcn/lastfm/data1.txt"),
    ]:
        with pytest.raises(UserError) as err:
            load()
        pattern = shape.format(name, rel, tmp_path / "cache", name)
        assert re.fullmatch(pattern, str(err.value)), str(err.value)
        assert "shared" not in str(err.value)

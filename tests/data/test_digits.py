"""The digits split kept in the download cache equals the one scikit-learn computes."""

import numpy as np

from netlab.data import digits


def test_cached_split_equals_sklearn_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLAB_CACHE", str(tmp_path))
    direct = digits._split(0.25, 3)
    first = digits.load.__wrapped__(0.25, 3)  # computes and writes the cache file
    (path,) = (tmp_path / "digits").iterdir()
    assert path == digits._cache_path(0.25, 3)
    with np.load(path) as f:  # what a later run reads: make it differ to see it is read
        changed = {k: f[k] for k in digits.KEYS}
    changed["train_y"][0] += 1
    np.savez(path, **changed)
    second = digits.load.__wrapped__(0.25, 3)
    for k in digits.KEYS:
        assert first[k].dtype == direct[k].dtype and first[k].shape == direct[k].shape
        np.testing.assert_array_equal(first[k], direct[k])
    assert second["train_y"][0] == direct["train_y"][0] + 1
    assert direct["train_x"].shape == (1347, 8, 8, 1) and direct["test_y"].shape == (450,)
    assert set(np.unique(direct["test_y"])) == set(range(10))  # stratified
    for torn in (b"torn", path.read_bytes()[:100]):  # unreadable: recomputed and replaced
        path.write_bytes(torn)
        again = digits.load.__wrapped__(0.25, 3)
        np.testing.assert_array_equal(again["train_y"], direct["train_y"])
        with np.load(path) as f:
            np.testing.assert_array_equal(f["train_y"], direct["train_y"])

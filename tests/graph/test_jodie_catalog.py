"""The JODIE streams through the dataset registry: the catalog names the SNAP URLs, a CSV placed in
the data folder is read as the bipartite stream, and a missing file is the registry's one-line
error naming the URL (the suite is offline)."""

import numpy as np
import pytest

from netlab.data import registry
from netlab.errors import UserError
from netlab.graph import events


def test_jodie_sets_are_catalogued_and_read_from_the_data_folder(tmp_path, monkeypatch):
    for name in ("wikipedia", "reddit"):
        (f,) = registry.get(f"jodie-{name}").files
        assert (f.rel, f.url) == (f"jodie/{name}.csv", f"http://snap.stanford.edu/jodie/{name}.csv")
    (tmp_path / "jodie").mkdir()
    (tmp_path / "jodie" / "wikipedia.csv").write_text(
        "user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
        "1,0,2.0,1,0.5\n"
        "0,1,1.0,0,0.25\n"
    )
    s = events.load_jodie("wikipedia", data_dir=str(tmp_path))
    np.testing.assert_array_equal(s.t, [1.0, 2.0])  # time-sorted
    np.testing.assert_array_equal(s.src, [0, 1])
    np.testing.assert_array_equal(s.dst, [3, 2])  # items shifted past the users
    np.testing.assert_array_equal(s.label, [0, 1])
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    with pytest.raises(UserError) as e:
        events.load_jodie("reddit", data_dir=str(tmp_path))
    assert "snap.stanford.edu/jodie/reddit.csv" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="wikipedia, reddit"):
        events.load_jodie("mooc")

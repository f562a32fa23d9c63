"""Event streams: chronological splits never overlap, padding keeps every event once, the planted
motif holds, negatives are seeded, and a JODIE CSV is read as a disjoint bipartite stream."""

import numpy as np
import pytest

from netlab.errors import UserError
from netlab.graph import events


@pytest.fixture(scope="module")
def stream():
    return events.synthetic_stream(num_nodes=16, num_events=200, feat_dim=3, seed=1)


def test_synthetic_stream_is_deterministic_sorted_and_plants_the_motif(stream):
    s, planted = stream
    s2, planted2 = events.synthetic_stream(num_nodes=16, num_events=200, feat_dim=3, seed=1)
    np.testing.assert_array_equal(s.t, s2.t)
    np.testing.assert_array_equal(s.dst, s2.dst)
    np.testing.assert_array_equal(planted, planted2)
    assert np.all(np.diff(s.t) >= 0) and np.all(s.src != s.dst)
    assert 20 < planted.sum() < 180
    # Every planted (a, w, t') follows some (a, u, t) with t' - t <= 0.5 and w = u's partner then.
    last = {}
    history = []
    for k in range(len(s)):
        a, b, t = int(s.src[k]), int(s.dst[k]), s.t[k]
        if planted[k]:
            assert any(a == x and b == w and 0 <= t - tt <= 0.5 for x, u, tt, w in history), (
                f"event {k} is not a motif follow-up"
            )
        history.append((a, b, t, last.get(b)))
        last[a], last[b] = b, a


def test_chronological_split_never_overlaps(stream):
    s, _ = stream
    tr, va, te = events.chronological_split(s)
    assert len(tr) + len(va) + len(te) == len(s)
    assert tr.t.max() < va.t.min() and va.t.max() < te.t.min()
    assert abs(len(tr) / len(s) - 0.70) < 0.02 and abs(len(te) / len(s) - 0.15) < 0.02
    with pytest.raises(UserError, match="data.test_quantile"):
        events.chronological_split(s, 0.8, 0.5)


def test_negatives_are_seeded_and_drawn_from_destinations(stream):
    s, _ = stream
    a = events.sample_negatives(s, 50, seed=3)
    np.testing.assert_array_equal(a, events.sample_negatives(s, 50, seed=3))
    assert not np.array_equal(a, events.sample_negatives(s, 50, seed=4))
    assert set(a.tolist()) <= set(s.dst.tolist())


def test_pad_batches_keeps_every_event_once_in_order(stream):
    s, _ = stream
    neg = events.sample_negatives(s, len(s), seed=0)
    b = events.pad_batches(s, 64, neg)
    assert b["src"].shape == (4, 64) and b["feat"].shape == (4, 64, 3)
    m = b["mask"].reshape(-1)
    assert m.sum() == 200 and m[:200].all()
    np.testing.assert_array_equal(b["dst"].reshape(-1)[m], s.dst)
    np.testing.assert_array_equal(b["neg"].reshape(-1)[m], neg)
    np.testing.assert_array_equal(b["t"].reshape(-1)[m], s.t.astype(np.float32))
    assert np.all(np.diff(b["t"].reshape(-1)) >= 0)


def test_read_jodie_csv(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text(
        "user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
        "0,0,0.0,0,0.1,0.2\n"
        "2,1,5.0,0,0.3,0.4\n"
        "1,0,3.0,1,0.5,0.6\n"
    )
    s = events.read_jodie_csv(path)
    assert s.num_nodes == 3 + 2
    np.testing.assert_array_equal(s.t, [0.0, 3.0, 5.0])
    np.testing.assert_array_equal(s.src, [0, 1, 2])
    np.testing.assert_array_equal(s.dst, [3, 3, 4])
    np.testing.assert_array_equal(s.label, [0, 1, 0])
    np.testing.assert_allclose(s.feat, [[0.1, 0.2], [0.5, 0.6], [0.3, 0.4]])
    with pytest.raises(UserError, match="not found"):
        events.read_jodie_csv(tmp_path / "missing.csv")

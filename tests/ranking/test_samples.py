"""ranking.samples.impression_labels: click / purchase / stay attribution rules."""
import numpy as np
import pytest
import pandas as pd

from ranking.samples import LABEL_COLUMNS, impression_labels

T = pd.Timestamp("2026-02-01T10:00:00Z")


def _events(rows):
    df = pd.DataFrame(rows, columns=["event_id", "user_id", "ts", "type", "stream_id", "item_id", "request_id",
                                     "position", "page", "value"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True).astype("datetime64[us, UTC]")
    df["stream_id"] = df["stream_id"].astype("Int64")
    df["item_id"] = df["item_id"].astype("Int64")
    df["position"] = df["position"].astype("Int64")
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def m(minutes):
    return T + pd.Timedelta(minutes=minutes)


def test_labels_by_request_id():
    ev = _events([
        ("i1", 1, m(0), "impression", 1, None, "A", 1, "live", None),
        ("i2", 1, m(0), "impression", 2, None, "A", 2, "live", None),
        ("i3", 1, m(0), "impression", 3, None, "A", 3, "live", None),
        ("c2", 1, m(0.2), "click", 2, None, "A", 2, "live", None),
        ("w2", 1, m(1), "watch", 2, None, "A", None, None, 120.0),
        ("p2", 1, m(5), "purchase", 2, 50, "A", None, None, 30.0),
        ("c3", 1, m(1), "click", 3, None, None, None, None, None),     # no request id: not A's click
        ("p9", 1, m(6), "purchase", None, 51, None, None, None, 9.0),   # no stream: never attributed
    ])
    lab = impression_labels(ev, pd.DataFrame({"stream_id": [1, 2, 3], "category": [7, 8, 9]}))
    assert list(lab.columns) == LABEL_COLUMNS
    assert lab["event_id"].tolist() == ["i1", "i2", "i3"]
    assert lab["click"].tolist() == [0, 1, 0]
    assert lab["purchase"].tolist() == [0, 1, 0]
    assert lab["stay_s"].tolist() == [0.0, 120.0, 0.0]
    assert lab["category"].tolist() == [7, 8, 9]
    assert lab["position"].tolist() == [1, 2, 3] and (lab["request_id"] == "A").all()
    assert str(lab["ts"].dtype) == "datetime64[us, UTC]"


def test_labels_without_request_id_last_touch_and_windows():
    ev = _events([
        ("a", 2, m(0), "impression", 5, None, None, None, None, None),
        ("b", 2, m(10), "impression", 5, None, None, None, None, None),
        ("c", 2, m(20), "impression", 5, None, None, None, None, None),
        ("w", 2, m(25), "watch", 5, None, None, None, None, 300.0),
        ("p", 2, m(180), "purchase", 5, 60, None, None, None, 20.0),
        ("d", 2, m(200), "impression", 5, None, None, None, None, None),   # later, not clicked
        ("p2", 2, m(205), "purchase", 5, 61, None, None, None, 5.0),     # goes to the clicked one (c)
        ("p3", 2, m(20 + 24 * 60 + 5), "purchase", 5, 62, None, None, None, 5.0),  # 24 h after c
        ("e", 3, m(0), "impression", 6, None, None, None, None, None),
        ("f", 3, m(31), "click", 6, None, None, None, None, None),       # > 30 min: not a click of e
        ("g", 4, m(0), "impression", 6, None, None, None, None, None),
        ("h", 4, m(0), "click", 6, None, None, None, None, None),        # same instant counts
        ("x", 5, m(0), "impression", 6, None, None, None, None, None),
        ("y", 9, m(1), "click", 6, None, None, None, None, None),        # another user: not x's click
    ])
    lab = impression_labels(ev).set_index("event_id")
    assert lab.loc[["a", "b", "c", "d"], "click"].tolist() == [0, 0, 1, 0]
    assert lab.loc["c", "stay_s"] == 300.0
    assert lab.loc["c", "purchase"] == 1 and lab.loc["d", "purchase"] == 0
    assert lab.loc[["e", "g", "x"], "click"].tolist() == [0, 1, 0]
    assert lab["category"].isna().all()
    # p3 is 24h05 after c (the clicked impression): outside the window, and d was not clicked
    assert lab["purchase"].sum() == 1
    assert len(lab) == 7


def test_empty_and_order_preserved():
    ev = _events([("k", 1, m(0), "click", 1, None, None, None, None, None)])
    lab = impression_labels(ev)
    assert list(lab.columns) == LABEL_COLUMNS and len(lab) == 0
    rng = np.random.default_rng(0)
    rows = [(f"i{i}", int(rng.integers(1, 4)), m(float(rng.integers(0, 500))), "impression",
             int(rng.integers(1, 4)), None, None, None, None, None) for i in range(200)]
    ev = _events(rows)
    lab = impression_labels(ev)
    assert len(lab) == 200 and lab["ts"].is_monotonic_increasing
    assert (lab[["click", "purchase"]].to_numpy() == 0).all()


def _write_repo(settings, ev, end=None):
    from feature_repo.parquet import write_statistics
    from feature_repo.statistics import compute_statistics
    streams = pd.DataFrame({"stream_id": [9], "category": [1]})
    write_statistics(settings, compute_statistics(ev, streams, bucket_s=settings.stats_bucket_s, end=end))
    return streams


def test_training_frame_lists_are_point_in_time(tmp_path):
    """lists=True: the id lists of an impression at T hold only events before T's row stamp, and
    rt_items only the stream's item events of the last 30 min (real Feast repo, DuckDB)."""
    from store.settings import Settings
    from ranking.samples import training_frame
    settings = Settings(home=tmp_path / "a").ensure_dirs()
    ev = _events([
        ("old", 2, m(-40), "item_click", 9, 500, None, None, None, None),   # 40 min before T
        ("i0", 2, m(-20), "impression", 9, None, None, None, None, None),
        ("c", 1, m(-5), "click", 9, None, None, None, None, None),
        ("w", 1, m(-4.5), "watch", 9, None, None, None, None, 120.0),       # 120 s of watch
        ("a", 2, m(-2), "item_click", 9, 501, None, None, None, None),     # 2 min before T
        ("b", 1, m(-1.9), "purchase", 9, 502, None, None, None, 5.0),
        ("i1", 1, m(0), "impression", 9, None, None, None, None, None),
        ("same", 2, m(0), "item_click", 9, 504, None, None, None, None),   # at T: not before T
        ("late", 1, m(1), "item_click", 9, 503, None, None, None, None),   # 1 min after T
        ("i2", 1, m(1.5), "impression", 9, None, None, None, None, None),
        ("i3", 1, m(3), "impression", 9, None, None, None, None, None),
        ("i4", 1, m(40), "impression", 9, None, None, None, None, None),
    ])
    streams = _write_repo(settings, ev)
    labels = impression_labels(ev, streams)
    plain = training_frame(settings, labels)
    frame = training_frame(settings, labels, lists=True)
    lists = ["recent_items", "recent_streams", "rt_items", "recent_stream_ts", "recent_stream_acts",
             "recent_stream_dwell", "recent_item_acts"]
    assert list(frame.columns) == list(plain.columns) + lists
    pd.testing.assert_frame_equal(frame[list(plain.columns)], plain)           # lists=False: unchanged
    pd.testing.assert_frame_equal(training_frame(settings, labels, lists=True, chunk_rows=2), frame)
    row = frame.set_index("event_id")
    assert row.loc["i0", "rt_items"] == [500] and row.loc["i0", "recent_items"] == [500]
    assert row.loc["i1", "rt_items"] == [502, 501]            # 500 is 40 min old; 504/503 not yet
    assert row.loc["i1", "recent_items"] == [502] and row.loc["i1", "recent_streams"] == [9]
    assert row.loc["i1", "recent_stream_ts"] == [int(m(-4.5).timestamp())]   # the latest watch: the ranker's time gap
    # the behaviour tokens: the purchase in stream 9 deepens it (click → watch → purchase), 120 s watched
    assert row.loc["i0", "recent_stream_acts"] == [] and row.loc["i0", "recent_item_acts"] == [3]
    assert row.loc["i1", "recent_stream_acts"] == [4] and row.loc["i1", "recent_stream_dwell"] == [120]
    assert row.loc["i1", "recent_item_acts"] == [4]
    assert row.loc["i3", "recent_item_acts"] == [3, 4]        # 503 clicked at T+1m (before T+3m), 502 bought
    assert row.loc["i2", "rt_items"] == [504, 502, 501]       # row stamped T+1m: 503 (at T+1m) absent
    assert row.loc["i2", "recent_items"] == [502]
    assert row.loc["i3", "rt_items"] == [503, 504, 502, 501] and row.loc["i3", "recent_items"] == [503, 502]
    assert row.loc["i4", "rt_items"] == [] and row.loc["i4", "recent_items"] == [503, 502]
    for c in lists:
        assert all(isinstance(v, list) and all(type(x) is int for x in v) for v in frame[c]), c

    # the serving expiry applies in training too: a row older than 30 min (the log ends at T+10m,
    # so no drop-off row exists; Feast's 1 h TTL still returns it) reads []
    cut = Settings(home=tmp_path / "b").ensure_dirs()
    _write_repo(cut, ev, end=m(10).to_pydatetime())
    late = training_frame(cut, labels, lists=True).set_index("event_id")
    assert late.loc["i3", "rt_items"] == [503, 504, 502, 501]
    assert late.loc["i4", "rt_items"] == [] and late.loc["i4", "recent_items"] == [503, 502]
    assert late.loc["i4", "orders_30m"] == 0


def test_purchase_intent_attribution_with_time_decay():
    """Two clicked impressions of stream 5 (10 h and 1 h before the purchase) and one not clicked:
    with η the credit splits η^10 : η^1, normalised; η = 1 splits evenly; off, last touch (0/1)."""
    h = lambda hours: T + pd.Timedelta(hours=hours)          # noqa: E731
    ev = _events([
        ("i1", 1, h(0), "impression", 5, None, "A", 1, "live", None),
        ("c1", 1, h(0.01), "click", 5, None, "A", 1, "live", None),
        ("i2", 1, h(9), "impression", 5, None, "B", 2, "live", None),
        ("c2", 1, h(9.01), "click", 5, None, "B", 2, "live", None),
        ("i3", 1, h(9.5), "impression", 5, None, "C", 1, "live", None),          # shown, not clicked
        ("p", 1, h(10), "purchase", 5, 50, None, None, None, 20.0),
        ("i4", 2, h(0), "impression", 5, None, "D", 1, "live", None),          # another user: no credit
    ])
    last = impression_labels(ev)
    assert last.set_index("event_id")["purchase"].to_dict() == {"i1": 0, "i2": 1, "i3": 0, "i4": 0}
    eta = 0.8
    lab = impression_labels(ev, purchase_decay=eta).set_index("event_id")["purchase"]
    w1, w2 = eta ** (10 - 0.0), eta ** (10 - 9.0)             # from the impressions' times
    assert lab["i1"] == pytest.approx(w1 / (w1 + w2)) and lab["i2"] == pytest.approx(w2 / (w1 + w2))
    assert lab["i3"] == 0 and lab["i4"] == 0 and lab.sum() == pytest.approx(1.0)
    even = impression_labels(ev, purchase_decay=1.0).set_index("event_id")["purchase"]
    assert even["i1"] == pytest.approx(0.5) and even["i2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="eta"):
        impression_labels(ev, purchase_decay=0.0)

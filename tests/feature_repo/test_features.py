"""feature_repo.features: the GBDT refs keep their meaning, the sequence lists and their expiry."""
import numpy as np
import pandas as pd

from feature_repo.definitions import RT_ITEMS_N, RT_ITEMS_WINDOW, RT_WINDOWS, VIEW_FEATURES
from feature_repo.features import (FEATURE_COLUMNS, GBDT_FEATURE_REFS, RECENT_TS_REFS, SCHEDULE_REF,
                                   SEQUENCE_COLUMNS, SEQUENCE_REFS, derive_features, expire_lists)


def test_sequence_refs_are_not_gbdt_features():
    assert SEQUENCE_REFS == ["user_recent:recent_items", "user_recent:recent_streams", "stream_realtime:rt_items",
                             "user_recent:recent_stream_ts", "user_recent:recent_stream_acts",
                             "user_recent:recent_stream_dwell", "user_recent:recent_item_acts"]
    assert SEQUENCE_COLUMNS == ["recent_items", "recent_streams", "rt_items", "recent_stream_ts",
                                "recent_stream_acts", "recent_stream_dwell", "recent_item_acts"]
    lists = {f"{v}:{n}" for v in VIEW_FEATURES for n, dt in VIEW_FEATURES[v] if dt == "int64_list"}
    assert lists == set(SEQUENCE_REFS) | {SCHEDULE_REF} and RECENT_TS_REFS[1] in SEQUENCE_REFS
    assert SCHEDULE_REF not in GBDT_FEATURE_REFS and RECENT_TS_REFS[1] not in GBDT_FEATURE_REFS
    assert ("stream_realtime:rt_items" not in GBDT_FEATURE_REFS and "user_recent:recent_items" not in GBDT_FEATURE_REFS)
    assert "user_recent:recent_streams" in GBDT_FEATURE_REFS           # input of recent_stream_rank
    assert not set(SEQUENCE_COLUMNS) & set(FEATURE_COLUMNS)
    assert len(FEATURE_COLUMNS) == 84 and len(GBDT_FEATURE_REFS) == 83    # unchanged by rt_items
    assert RT_WINDOWS[RT_ITEMS_WINDOW] == 1800 and RT_ITEMS_N == 10


def test_expire_lists():
    now = pd.Timestamp("2026-03-01T12:00:00Z")
    ages = [0.0, 1799.999, 1800.0, 3000.0, np.nan, 10.0, 10.0]
    frame = pd.DataFrame({
        "stream_id": np.arange(7),
        "event_timestamp": pd.Series([now] * 7).astype("datetime64[us, UTC]"),
        "rt_epoch": [now.timestamp() - a for a in ages],
        "rt_items": [[1, 2], np.array([3], dtype=np.int64), [4], [5], [6], None, np.nan],
        "recent_items": [None, [7], np.array([8, 9]), [], np.nan, [1], [2]],
        "clicks_30m": [1.0] * 7,
    })
    before = frame.copy(deep=True)
    out = expire_lists(frame)
    assert out["rt_items"].tolist() == [[1, 2], [3], [], [], [], [], []]
    assert out["recent_items"].tolist() == [[], [7], [8, 9], [], [], [1], [2]]       # never expires
    assert out["recent_streams"].tolist() == [[]] * 7                                 # absent column: []
    assert all(type(x) is int for v in out["rt_items"] for x in v)
    assert all(type(x) is int for v in out["recent_items"] for x in v)
    pd.testing.assert_series_equal(out["clicks_30m"], frame["clicks_30m"])
    pd.testing.assert_frame_equal(frame, before)                                     # input untouched
    # no rt_epoch column at all: rt_items reads [] (like the counters: no row)
    assert expire_lists(frame.drop(columns=["rt_epoch"]))["rt_items"].tolist() == [[]] * 7
    assert expire_lists(frame.iloc[:0]).columns.tolist()[-5:] == ["recent_streams", "recent_stream_ts", "recent_stream_acts",
                                                                  "recent_stream_dwell", "recent_item_acts"]


def test_derive_features_numeric_outputs_ignore_the_lists():
    now = pd.Timestamp("2026-03-01T12:00:00Z")
    frame = pd.DataFrame({"stream_id": [1, 2], "event_timestamp": pd.Series([now] * 2).astype("datetime64[us, UTC]"),
                          "rt_epoch": [now.timestamp() - 60] * 2, "clicks_30m": [3.0, 4.0],
                          "recent_streams": [[2, 1], None]})
    a = derive_features(frame)[FEATURE_COLUMNS]
    b = derive_features(frame.assign(rt_items=[[5], [6]], recent_items=[[1], []]))[FEATURE_COLUMNS]
    pd.testing.assert_frame_equal(a, b)
    assert a["recent_stream_rank"].tolist() == [2.0, 0.0]

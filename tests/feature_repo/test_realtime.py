"""feature_repo.realtime: the counters pushed at an instant equal the offline log's (one definition)."""
import pandas as pd
import pytest

from feature_repo_testdata import T0, random_events
from feature_repo.definitions import RT_ITEMS_N, RT_ITEMS_WINDOW, RT_WINDOWS
from feature_repo.realtime import REALTIME_LOOKBACK, realtime_frames
from feature_repo.statistics import compute_statistics

COUNTERS = ["viewers_5m", "viewers_30m", "viewers_1h", "clicks_5m", "clicks_30m", "orders_5m", "orders_30m"]


@pytest.fixture(scope="module")
def log():
    ev = random_events(seed=5, n=500, n_users=5, n_streams=3, span_s=5 * 3600)
    end = ev.ts.max() + pd.Timedelta(hours=2)
    return ev, compute_statistics(ev, None, bucket_s=3600, end=end.to_pydatetime())


def _state(frame, key, at):
    sub = frame[frame.event_timestamp <= at]
    return sub.groupby(key).tail(1).set_index(key)


def test_realtime_frames_equal_the_offline_log_on_its_grid(log):
    ev, frames = log
    checked = {"rt_items": 0}
    start = ev.ts.min().floor("60s")
    for at in pd.date_range(start, ev.ts.max() + pd.Timedelta(hours=1, minutes=30), freq="13min"):
        rf = realtime_frames(ev, at.to_pydatetime())
        rt = rf["stream_realtime"].set_index("stream_id")
        off = _state(frames["stream_realtime"], "stream_id", at)
        assert set(rt.index) <= set(off.index)
        assert (rt["event_timestamp"] == at).all() and (rt["rt_epoch"] == at.timestamp()).all()
        for sid in off.index:
            age = (at - off.loc[sid, "event_timestamp"]).total_seconds()
            for c in COUNTERS:
                exp = off.loc[sid, c] if age < RT_WINDOWS[c.split("_")[1]] else 0    # derive_features' rule
                got = rt.loc[sid, c] if sid in rt.index else 0
                assert got == exp, (at, sid, c)
            exp = list(off.loc[sid, "rt_items"]) if age < RT_WINDOWS[RT_ITEMS_WINDOW] else []   # expire_lists' rule
            got = rt.loc[sid, "rt_items"] if sid in rt.index else []
            assert got == exp and all(type(x) is int for x in got), (at, sid)
            checked["rt_items"] += bool(exp)
        rec = _state(frames["user_recent"], "user_id", at)
        ur = rf["user_recent"].set_index("user_id")
        assert set(ur.index) == set(rec.index)
        for uid in rec.index:
            assert list(ur.loc[uid, "recent_streams"]) == list(rec.loc[uid, "recent_streams"])
            assert list(ur.loc[uid, "recent_items"]) == list(rec.loc[uid, "recent_items"])
    assert checked["rt_items"] > 20


def test_realtime_frames_between_grid_instants_are_exact(log):
    ev, _ = log
    for at in pd.date_range(ev.ts.min(), ev.ts.max(), periods=23):
        at = (at + pd.Timedelta(seconds=17, microseconds=3)).floor("us")
        rt = realtime_frames(ev, at.to_pydatetime())["stream_realtime"].set_index("stream_id")
        for sid in range(1, 4):
            for m, w in (("clicks", "5m"), ("viewers", "30m"), ("orders", "30m"), ("viewers", "1h")):
                win = ev[(ev.stream_id == sid) & (ev.ts >= at - pd.Timedelta(seconds=RT_WINDOWS[w])) & (ev.ts < at)]
                exp = {"clicks": (win.type == "click").sum(), "orders": (win.type == "purchase").sum(),
                       "viewers": win.loc[win.type.isin(["click", "watch"]), "user_id"].nunique()}[m]
                got = rt.loc[sid, f"{m}_{w}"] if sid in rt.index else 0
                assert got == exp, (at, sid, m, w)
            win = ev[(ev.stream_id == sid) & ev.type.isin(["item_click", "purchase"]) & ev.item_id.notna()
                     & (ev.ts >= at - pd.Timedelta(seconds=RT_WINDOWS[RT_ITEMS_WINDOW])) & (ev.ts < at)]
            exp = []
            for x in reversed(win.item_id.astype(int).tolist()):     # the log is in time order
                if x not in exp:
                    exp.append(x)
            assert (rt.loc[sid, "rt_items"] if sid in rt.index else []) == exp[:RT_ITEMS_N], (at, sid)


def full_items(ev, at, sid):
    """rt_items of stream sid at ``at`` computed from the whole log (offline statistics)."""
    frames = compute_statistics(ev, None, bucket_s=3600, end=at.to_pydatetime(), origin=at.to_pydatetime(),
                                views=["stream_realtime"])
    rows = frames["stream_realtime"]
    rows = rows[rows.stream_id == sid]
    return [] if rows.empty else list(rows.iloc[-1]["rt_items"])


def test_requested_entities_only_and_zero_rows():
    at = pd.Timestamp(T0) + pd.Timedelta(hours=3)
    ev = random_events(seed=8, n=200, n_users=4, n_streams=3, span_s=3 * 3600)
    rf = realtime_frames(ev, at.to_pydatetime(), stream_ids=[2, 99], user_ids=[1, 42])
    rt, ur = rf["stream_realtime"], rf["user_recent"]
    assert rt["stream_id"].tolist() == [2, 99] and ur["user_id"].tolist() == [1, 42]
    assert (rt.loc[rt.stream_id == 99, COUNTERS] == 0).all().all()
    assert rt.loc[rt.stream_id == 99, "rt_items"].iloc[0] == []
    assert rt.loc[rt.stream_id == 2, "rt_items"].iloc[0] == full_items(ev, at, 2)
    assert ur.loc[ur.user_id == 42, "recent_streams"].iloc[0] == []
    full = realtime_frames(ev, at.to_pydatetime())["stream_realtime"].set_index("stream_id")
    assert (rt.set_index("stream_id").loc[2, COUNTERS] == full.loc[2, COUNTERS]).all()
    # events at or after `at` are not seen
    later = realtime_frames(ev, (ev.ts.min()).to_pydatetime())
    assert later["stream_realtime"].empty and later["user_recent"].empty
    assert REALTIME_LOOKBACK == pd.Timedelta(hours=1)


def test_stream_with_only_item_events_in_the_last_hour():
    """A requested stream whose last hour holds only item clicks / purchases: zero viewers and
    clicks, its items listed (the distinct-viewers count used to fail on an empty member set)."""
    at = pd.Timestamp(T0) + pd.Timedelta(hours=2)
    ev = pd.DataFrame({"event_id": ["a", "b", "c"], "user_id": [1, 2, 1],
                       "ts": pd.Series([at - pd.Timedelta(minutes=m) for m in (50, 12, 2)]).astype("datetime64[us, UTC]"),
                       "type": ["item_click", "purchase", "item_click"], "stream_id": pd.array([4, 4, 4], dtype="Int64"),
                       "item_id": pd.array([10, 11, 12], dtype="Int64"), "request_id": [None] * 3,
                       "position": pd.array([pd.NA] * 3, dtype="Int64"), "page": [None] * 3, "value": [None, 5.0, None]})
    rt = realtime_frames(ev, at.to_pydatetime(), stream_ids=[4])["stream_realtime"].iloc[0]
    assert rt["rt_items"] == [12, 11] and rt["orders_30m"] == 1 and rt["viewers_1h"] == 0 and rt["clicks_5m"] == 0

"""feature_repo.realtime: the counters pushed at an instant equal the offline log's (one definition)."""
import numpy as np
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


def test_realtime_frames_between_grid_instants(log):
    # counters: the grid's value at at's minute (whole minutes [T - W, T), T = at floored to the
    # minute: what the offline log holds at `at`); rt_items: exact at `at`
    ev, _ = log
    for at in pd.date_range(ev.ts.min(), ev.ts.max(), periods=23):
        at = (at + pd.Timedelta(seconds=17, microseconds=3)).floor("us")
        T = at.floor("60s")
        rt = realtime_frames(ev, at.to_pydatetime())["stream_realtime"].set_index("stream_id")
        for sid in range(1, 4):
            for m, w in (("clicks", "5m"), ("viewers", "30m"), ("orders", "30m"), ("viewers", "1h")):
                win = ev[(ev.stream_id == sid) & (ev.ts >= T - pd.Timedelta(seconds=RT_WINDOWS[w])) & (ev.ts < T)]
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
    assert REALTIME_LOOKBACK == pd.Timedelta(hours=1, minutes=1)


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


def _online_counters(row, t):
    """What serving reads for a pushed / materialized stream row at instant t (derive_features,
    the same code as the API's assembly)."""
    from feature_repo.features import derive_features
    frame = pd.DataFrame([{**row, "event_timestamp": t}])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    out = derive_features(frame)
    return {c: out[c].iloc[0] for c in COUNTERS}


def _offline_counters(log, sid, t):
    """The offline log's value at t (Feast's point-in-time rule: the latest row at or before t),
    through the same derive_features (training's path)."""
    rows = log[(log.stream_id == sid) & (log.event_timestamp <= t)]
    if rows.empty:
        return {c: 0.0 for c in COUNTERS}
    row = rows.iloc[-1].to_dict()
    row.pop("rt_steps")                       # training never reads the schedule
    return _online_counters({**row, "stream_id": sid}, t)


def test_online_counters_equal_the_offline_log_at_random_instants_between_pushes():
    """Serving's real-time counters at any instant are the offline log's (what training joins):
    the online store starts from the materialized latest rows (run_statistics) and then gets one
    push per event a moment after it; at random instants between pushes — where nothing was
    re-pushed while windows emptied minute by minute — each stream's counters online equal the
    offline log's value at that instant."""
    from feature_repo.statistics import with_latest_schedules
    rng = np.random.default_rng(3)
    ev = random_events(seed=13, n=160, n_users=6, n_streams=3, span_s=4 * 3600)
    end = ev.ts.max() + pd.Timedelta(hours=2)
    log = compute_statistics(ev, None, bucket_s=3600, end=end.to_pydatetime(), views=["stream_realtime"])["stream_realtime"]
    # 1. materialize at t0 (mid-log): each stream's latest offline row, with its schedule
    t0 = ev.ts.iloc[len(ev) // 2] + pd.Timedelta(seconds=7)
    before = ev[ev.ts < t0]
    mat = compute_statistics(before, None, bucket_s=3600, end=t0.to_pydatetime(), views=["stream_realtime"])["stream_realtime"]
    mat = with_latest_schedules(mat, before, t0.to_pydatetime())
    online = {int(r.stream_id): (t0, r._asdict()) for r in mat.groupby("stream_id").tail(1).itertuples(index=False)}
    assert any(len(row["rt_steps"]) for _, row in online.values())
    # 2. a push per later event with a stream, 1-900 ms after it
    later = ev[(ev.ts >= t0) & ev.stream_id.notna()]
    pushes = sorted(((ts + pd.Timedelta(milliseconds=float(rng.uniform(1, 900)))).floor("us"), int(sid), ts)
                    for ts, sid in zip(later.ts, later.stream_id))
    instants = sorted(t0 + pd.Timedelta(seconds=float(s)) for s in rng.uniform(0, (end - t0).total_seconds(), 300))
    checked = changed = 0
    i = 0
    for t in instants:
        while i < len(pushes) and pushes[i][0] <= t:
            at, sid, _ = pushes[i]
            row = realtime_frames(ev, at.to_pydatetime(), stream_ids=[sid])["stream_realtime"].iloc[0].to_dict()
            online[sid] = (at, row)
            i += 1
        if any(ts < t for _, _, ts in pushes[i:i + 5]):
            continue                           # an event whose push is still on its way: freshness, not skew
        for sid in (1, 2, 3):
            exp = _offline_counters(log, sid, t)
            if sid in online:
                at, row = online[sid]
                got = _online_counters({**row, "stream_id": sid}, t)
                changed += any(got[c] != row[c] for c in COUNTERS)     # a drop-off since the push
            else:
                got = {c: 0.0 for c in COUNTERS}
            assert got == exp, (t, sid, got, exp)
            checked += 1
    assert checked > 600 and changed > 50, (checked, changed)

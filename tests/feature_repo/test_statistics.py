"""feature_repo.statistics against a brute-force computation, and its point-in-time contract."""
import math
import time

import numpy as np
import pandas as pd
import pytest

from feature_repo_testdata import T0, catalog, random_events
from feature_repo.definitions import (RECENT_N, RT_ITEMS_N, RT_ITEMS_WINDOW, RT_WINDOWS, VIEW_FEATURES, WINDOWS,
                                      view_ttl_s)
from feature_repo.statistics import compute_statistics

B = 3600
RT = 60


def _latest(frame, keys, values, at, ttl_s=0):
    """The row Feast's point-in-time join picks: the latest with event_timestamp <= at, if it is at
    most ttl_s old (0: no TTL)."""
    m = frame["event_timestamp"] <= at
    if ttl_s:
        m &= frame["event_timestamp"] >= at - pd.Timedelta(seconds=ttl_s)
    for k, v in zip(keys, values):
        m &= frame[k] == v
    sub = frame[m]
    return None if sub.empty else sub.iloc[-1]


TTL = view_ttl_s("stream_stats", B)


def _ratio(a, b):
    return a / b if b > 0 else math.nan


def _expect_rate(ev, at, window_s, bucket_s):
    lo = at - pd.Timedelta(seconds=(window_s // bucket_s) * bucket_s)
    w = ev[(ev.ts >= lo) & (ev.ts < at)]
    exp = (w.type == "impression").sum()
    clk = (w.type == "click").sum()
    wat = (w.type == "watch").sum()
    buy = (w.type == "purchase").sum()
    watch_s = w.loc[w.type == "watch", "value"].sum()
    gmv = w.loc[w.type == "purchase", "value"].sum()
    return dict(exposures=exp, clicks=clk, watches=wat, purchases=buy, ctr=_ratio(clk, exp),
                cvr=_ratio(buy, clk), stay_mean=_ratio(watch_s, wat), gmv=gmv, watch_s=watch_s,
                distinct_users=w.loc[w.type.isin(["click", "watch"]), "user_id"].nunique(),
                distinct_streams=w.loc[w.type.isin(["click", "watch"]), "stream_id"].nunique())


def _close(a, b):
    if isinstance(b, float) and math.isnan(b):
        return a is None or (isinstance(a, float) and math.isnan(a))
    return a is not None and not (isinstance(a, float) and math.isnan(a)) and abs(float(a) - float(b)) < 1e-6


def _row_value(row, name, default):
    return default if row is None else row[name]


@pytest.fixture(scope="module")
def world():
    ev = random_events(seed=11, n=500, n_users=5, n_streams=4, span_s=40 * 86_400)   # gaps > the TTL
    streams, items = catalog(n_streams=4)
    frames = compute_statistics(ev, streams, bucket_s=B, items=items)
    return ev, streams, items, frames


def _grid(ev, bucket_s, n=60, seed=0):
    rng = np.random.default_rng(seed)
    start = ev.ts.min().floor(f"{bucket_s}s")
    end = ev.ts.max().ceil(f"{bucket_s}s")
    k = rng.integers(0, int((end - start).total_seconds() // bucket_s) + 1, size=n)
    return [start + pd.Timedelta(seconds=int(x) * bucket_s) for x in k]


def test_stream_and_user_stats_match_brute_force(world):
    ev, streams, items, frames = world
    checks = 0
    for at in _grid(ev, B, n=40):
        for sid in range(1, 5):
            row = _latest(frames["stream_stats"], ["stream_id"], [sid], at, TTL)     # heartbeats keep it exact
            sev = ev[ev.stream_id == sid]
            for w, ws in WINDOWS.items():
                e = _expect_rate(sev, at, ws, B)
                for m in ("exposures", "clicks", "watches", "purchases", "gmv"):
                    assert _close(_row_value(row, f"s_{m}_{w}", 0), e[m]), (at, sid, m, w)
                assert _close(_row_value(row, f"s_viewers_{w}", 0), e["distinct_users"]), (at, sid, w)
                for m in ("ctr", "cvr", "stay_mean"):
                    assert _close(_row_value(row, f"s_{m}_{w}", math.nan), e[m]), (at, sid, m, w)
                checks += 1
        for uid in range(1, 6):
            row = _latest(frames["user_stats"], ["user_id"], [uid], at, TTL)
            uev = ev[ev.user_id == uid]
            for w, ws in WINDOWS.items():
                e = _expect_rate(uev, at, ws, B)
                for m in ("exposures", "clicks", "watches", "purchases", "gmv"):
                    assert _close(_row_value(row, f"u_{m}_{w}", 0), e[m]), (at, uid, m, w)
                assert _close(_row_value(row, f"u_streams_{w}", 0), e["distinct_streams"])
                for m in ("ctr", "cvr", "stay_mean"):
                    assert _close(_row_value(row, f"u_{m}_{w}", math.nan), e[m]), (at, uid, m, w)
    assert checks > 100


def test_user_category_and_user_stream_match_brute_force(world):
    ev, streams, items, frames = world
    scat = dict(zip(streams.stream_id, streams.category))
    icat = dict(zip(items.item_id, items.category))
    cat = [scat.get(s) if not pd.isna(s) else (icat.get(i) if not pd.isna(i) else None)
           for s, i in zip(ev.stream_id, ev.item_id)]
    ev = ev.assign(category=cat)
    for at in _grid(ev, B, n=25, seed=1):
        for uid in range(1, 6):
            for c in range(3):
                row = _latest(frames["user_category_stats"], ["user_id", "category_id"], [uid, c], at, TTL)
                sub = ev[(ev.user_id == uid) & (ev.category == c)]
                for w, ws in WINDOWS.items():
                    e = _expect_rate(sub, at, ws, B)
                    for m in ("exposures", "clicks", "purchases", "watch_s"):
                        assert _close(_row_value(row, f"uc_{m}_{w}", 0), e[m]), (at, uid, c, m, w)
                    assert _close(_row_value(row, f"uc_ctr_{w}", math.nan), e["ctr"])
            for sid in range(1, 5):
                row = _latest(frames["user_stream_stats"], ["user_id", "stream_id"], [uid, sid], at)
                sub = ev[(ev.user_id == uid) & (ev.stream_id == sid) & (ev.ts < at)]
                assert _close(_row_value(row, "us_clicks", 0), (sub.type == "click").sum())
                assert _close(_row_value(row, "us_watches", 0), (sub.type == "watch").sum())
                assert _close(_row_value(row, "us_purchases", 0), (sub.type == "purchase").sum())
                assert _close(_row_value(row, "us_watch_s", 0), sub.loc[sub.type == "watch", "value"].sum())
                inter = sub[sub.type.isin(["click", "watch", "purchase"])]
                last = inter.ts.max().timestamp() if len(inter) else math.nan
                assert _close(_row_value(row, "us_last_interaction_epoch", math.nan), last), (at, uid, sid)


def test_realtime_log_and_recent_lists_match_brute_force():
    ev = random_events(seed=5, n=400, n_users=4, n_streams=3, span_s=6 * 3600)
    streams, items = catalog(n_streams=3)
    frames = compute_statistics(ev, streams, bucket_s=B, items=items)
    rt, rec = frames["stream_realtime"], frames["user_recent"]
    for at in _grid(ev, RT, n=80, seed=2):
        for sid in range(1, 4):
            row = _latest(rt, ["stream_id"], [sid], at, view_ttl_s("stream_realtime", B))   # as Feast reads it
            for m, types in (("viewers", None), ("clicks", ["click"]), ("orders", ["purchase"])):
                for w, ws in RT_WINDOWS.items():
                    name = f"{m}_{w}"
                    if name not in dict(VIEW_FEATURES["stream_realtime"]):
                        continue
                    win = ev[(ev.stream_id == sid) & (ev.ts >= at - pd.Timedelta(seconds=ws)) & (ev.ts < at)]
                    exp = (win.loc[win.type.isin(["click", "watch"]), "user_id"].nunique() if types is None
                           else win.type.isin(types).sum())
                    got = _row_value(row, name, 0)
                    # the latest row may be older than `at`; derive_features zeroes an aged-out window
                    if row is not None and (at - row["event_timestamp"]).total_seconds() >= ws:
                        got = 0
                    assert _close(got, exp), (at, sid, name)
        for uid in range(1, 5):
            row = _latest(rec, ["user_id"], [uid], at)
            past = ev[(ev.user_id == uid) & (ev.ts < at)].sort_values("ts", kind="stable")
            for col, types, key in (("recent_streams", ["click", "watch"], "stream_id"),
                                    ("recent_items", ["item_click", "purchase"], "item_id")):
                seq = past.loc[past.type.isin(types) & past[key].notna(), key].astype(int).tolist()
                exp = []
                for x in reversed(seq):
                    if x not in exp:
                        exp.append(x)
                got = [] if row is None else list(row[col])
                assert got == exp[:RECENT_N], (at, uid, col)


def test_point_in_time_clicks_after_t_never_reach_earlier_rows():
    """A stream clicked only after T: a row at or before T shows nothing; one a bucket later does."""
    T = pd.Timestamp(T0) + pd.Timedelta(hours=5)
    ev = random_events(seed=1, n=50, n_users=3, n_streams=2, span_s=4 * 3600)
    ev = ev[ev.stream_id != 9]
    late = pd.DataFrame({"event_id": ["late1", "late2"], "user_id": [1, 2],
                         "ts": pd.Series([T, T + pd.Timedelta(minutes=10)]).astype("datetime64[us, UTC]"),
                         "type": ["click", "click"], "stream_id": pd.array([9, 9], dtype="Int64"),
                         "item_id": pd.array([pd.NA, pd.NA], dtype="Int64"), "request_id": [None, None],
                         "position": pd.array([pd.NA, pd.NA], dtype="Int64"), "page": [None, None],
                         "value": [np.nan, np.nan]})
    ev = pd.concat([ev, late], ignore_index=True).sort_values("ts", kind="stable")
    frames = compute_statistics(ev, pd.DataFrame({"stream_id": [1, 2, 9], "category": [0, 1, 2]}), bucket_s=B)
    ss, rt = frames["stream_stats"], frames["stream_realtime"]
    s9 = ss[ss.stream_id == 9]
    assert s9["event_timestamp"].min() > T            # no row of stream 9 at or before T
    assert _latest(ss, ["stream_id"], [9], T - pd.Timedelta(seconds=1)) is None
    assert _latest(ss, ["stream_id"], [9], T) is None
    row = _latest(ss, ["stream_id"], [9], T + pd.Timedelta(seconds=B))
    assert row["s_clicks_1d"] == 2 and row["s_viewers_1d"] == 2
    assert _latest(rt, ["stream_id"], [9], T) is None
    assert _latest(rt, ["stream_id"], [9], T + pd.Timedelta(seconds=RT))["clicks_5m"] == 1
    # every row only counts strictly earlier events
    for _, r in ss[ss.stream_id == 9].iterrows():
        assert r["s_clicks_30d"] == (ev[(ev.stream_id == 9) & (ev.ts < r["event_timestamp"])].type == "click").sum()


def test_end_cuts_at_a_bucket_boundary_and_rows_are_typed():
    ev = random_events(seed=3, n=300, span_s=3 * 86_400)
    streams, items = catalog()
    end = pd.Timestamp(T0) + pd.Timedelta(hours=30, minutes=20)
    frames = compute_statistics(ev, streams, bucket_s=B, end=end.to_pydatetime(), items=items)
    boundary = pd.Timestamp(T0) + pd.Timedelta(hours=30)
    for view, df in frames.items():
        assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]", view
        limit = boundary if view not in ("stream_realtime", "user_recent") else end
        assert df["event_timestamp"].max() <= limit, view
        assert not df.duplicated([c for c in df.columns if c.endswith("_id")] + ["event_timestamp"]).any(), view
    full = compute_statistics(ev, streams, bucket_s=B, items=items)
    a = frames["stream_stats"]
    b = full["stream_stats"]
    b = b[b.event_timestamp <= boundary].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    # drop-off rows continue past the last event when `end` is later
    later = compute_statistics(ev, streams, bucket_s=B, end=(pd.Timestamp(T0) + pd.Timedelta(days=40)).to_pydatetime())
    last = later["stream_stats"].groupby("stream_id").tail(1)
    assert (last["s_exposures_30d"] == 0).all() and (last["s_clicks_30d"] == 0).all()


def test_statistics_scale_300k_events():
    n = 300_000
    ev = random_events(seed=2, n=n, n_users=3000, n_streams=300, n_items=2000, span_s=30 * 86_400)
    streams, items = catalog(n_streams=300, n_items=2000, n_categories=12)
    t = time.perf_counter()
    frames = compute_statistics(ev, streams, bucket_s=B, items=items)
    dt = time.perf_counter() - t
    rows = {k: len(v) for k, v in frames.items()}
    print(f"compute_statistics: {n:,} events in {dt:.2f}s ({n / dt:,.0f} events/s); rows {rows}")
    assert dt < 40


def test_windowed_rows_are_at_most_a_ttl_apart_until_the_final_zero_row(world):
    ev, streams, items, frames = world
    for view, key, col in (("stream_stats", ["stream_id"], "s_exposures_30d"),
                           ("user_stats", ["user_id"], "u_exposures_30d"),
                           ("user_category_stats", ["user_id", "category_id"], "uc_exposures_30d")):
        df = frames[view].sort_values(key + ["event_timestamp"])
        gap = df.groupby(key)["event_timestamp"].diff().dt.total_seconds()
        prev_nonzero = df.groupby(key)[col].shift(1) > 0
        assert (gap[prev_nonzero] <= TTL).all(), view
        assert (gap == TTL).any(), view              # heartbeat rows fill the silences
    # the windowed rows change at least once a day: no two consecutive identical rows beyond heartbeats
    ss = frames["stream_stats"]
    assert len(ss) < 40 * 24 * 4


def _expect_rt_items(ev, sid, at):
    """Brute force: distinct items of stream sid's item events in [at - 30 min, at), most recent
    first (last event; ties: the later event of the log), at most RT_ITEMS_N."""
    lo = at - pd.Timedelta(seconds=RT_WINDOWS[RT_ITEMS_WINDOW])
    w = ev[(ev.stream_id == sid) & ev.type.isin(["item_click", "purchase"]) & ev.item_id.notna()
           & (ev.ts >= lo) & (ev.ts < at)]
    w = w.assign(_pos=np.arange(len(w))).sort_values(["ts", "_pos"], kind="stable")
    out = []
    for x in reversed(w.item_id.astype(int).tolist()):
        if x not in out:
            out.append(x)
    return out[:RT_ITEMS_N]


def _dense_item_events(seed, n=2000, span_s=3 * 3600):
    """Many item events on few streams and items (lists often full, many ties in one second)."""
    ev = random_events(seed=seed, n=n, n_users=4, n_streams=2, n_items=14, span_s=span_s)
    ev["ts"] = ev["ts"].dt.floor("10s")          # equal timestamps: the log order breaks ties
    return ev.sample(frac=1.0, random_state=seed).sort_values("ts", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("seed", [5, 21])
def test_rt_items_exact_at_every_emitted_row(seed):
    ev = _dense_item_events(seed) if seed == 21 else random_events(seed=seed, n=400, n_users=4, n_streams=3,
                                                                    span_s=6 * 3600)
    rt = compute_statistics(ev, None, bucket_s=B, views=["stream_realtime"])["stream_realtime"]
    assert len(rt) and any(len(v) == RT_ITEMS_N for v in rt.rt_items) == (seed == 21)
    for sid, at, got in zip(rt.stream_id, rt.event_timestamp, rt.rt_items):
        assert list(got) == _expect_rt_items(ev, sid, at), (sid, at)
        assert all(isinstance(x, int) for x in got)
    # between rows the latest row is exact (as Feast reads it, with the expiry rule of serving)
    for at in _grid(ev, RT, n=150, seed=seed):
        for sid in sorted(ev.stream_id.dropna().unique()):
            row = _latest(rt, ["stream_id"], [sid], at, view_ttl_s("stream_realtime", B))
            got = [] if row is None or (at - row["event_timestamp"]).total_seconds() >= 1800 else list(row["rt_items"])
            assert got == _expect_rt_items(ev, sid, at), (sid, at)


def test_rt_items_drop_off_row_and_counters_unchanged():
    """The list empties on a row of its own when the last item event ages out; item events change
    no counter (item_click is neither a click nor an order)."""
    ev = random_events(seed=5, n=400, n_users=4, n_streams=3, span_s=6 * 3600)
    end = (ev.ts.max() + pd.Timedelta(hours=2)).to_pydatetime()
    rt = compute_statistics(ev, None, bucket_s=B, end=end, views=["stream_realtime"])["stream_realtime"]
    for sid, g in rt.groupby("stream_id"):
        items = ev[(ev.stream_id == sid) & ev.type.isin(["item_click", "purchase"]) & ev.item_id.notna()]
        last = items.ts.max().floor("60s") + pd.Timedelta(seconds=60 + RT_WINDOWS[RT_ITEMS_WINDOW])
        row = g[g.event_timestamp == last]
        assert len(row) == 1 and row.iloc[0]["rt_items"] == [], sid
        assert len(g[g.event_timestamp < last].iloc[-1]["rt_items"]) > 0        # the row before: not yet
        assert g.iloc[-1]["rt_items"] == []
    no_items = ev[~ev.type.isin(["item_click"])]
    base = compute_statistics(no_items, None, bucket_s=B, end=end, views=["stream_realtime"])["stream_realtime"]
    counters = [n for n, dt in VIEW_FEATURES["stream_realtime"] if dt == "int64"]
    # every row of the log without item clicks is in the full log, with the same counters
    merged = base.merge(rt, on=["stream_id", "event_timestamp"], suffixes=("", "_full"), how="left")
    for c in counters:
        assert (merged[c] == merged[f"{c}_full"]).all(), c

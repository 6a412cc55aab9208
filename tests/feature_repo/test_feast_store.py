"""A real Feast repo in a temp dir: apply, statistics -> Parquet -> materialize, online reads, push,
get_historical_features on DuckDB (every entity row, point in time), train/serve agreement."""
import math

import numpy as np
import pandas as pd
import pytest

from feature_repo_testdata import T0, catalog, random_events
from feature_repo.definitions import view_ttl_s
from store.settings import Settings

B = 3600


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from feature_repo.parquet import materialize, write_statistics
    from feature_repo.statistics import compute_statistics
    from feature_repo.store import apply_definitions
    settings = Settings(home=tmp_path_factory.mktemp("feast")).ensure_dirs()
    ev = random_events(seed=7, n=3000, n_users=20, n_streams=8, n_items=30, span_s=10 * 86_400)
    streams, items = catalog(n_streams=8, n_items=30)
    end = (pd.Timestamp(T0) + pd.Timedelta(days=9, hours=23, minutes=50, seconds=30)).to_pydatetime()
    frames = compute_statistics(ev, streams, bucket_s=B, end=end, items=items)
    write_statistics(settings, frames)
    apply_definitions(settings)
    info = materialize(settings, frames, end)
    return settings, ev, streams, items, frames, end, info


def _latest(frame, keys: dict, at):
    m = frame["event_timestamp"] <= at
    for k, v in keys.items():
        m &= frame[k] == v
    sub = frame[m]
    return None if sub.empty else sub.iloc[-1]


def _same(a, b):
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return a is None or (isinstance(a, float) and math.isnan(a))
    if isinstance(b, (list, np.ndarray)):
        return list(a) == list(b)
    return a is not None and abs(float(a) - float(b)) < 1e-9


def test_apply_is_idempotent_and_registers_everything(repo):
    from feature_repo.store import apply_definitions, get_store, needs_apply
    settings = repo[0]
    store = apply_definitions(settings)
    assert not needs_apply(settings, store)
    before = store.get_feature_view("stream_stats").materialization_intervals
    assert before                                   # materialized by the fixture, kept by re-apply
    assert apply_definitions(settings) is store
    names = sorted(fv.name for fv in store.list_feature_views())
    assert names == sorted(["stream_stats", "user_stats", "user_category_stats", "user_stream_stats",
                            "stream_realtime", "user_recent"])
    assert {e.name for e in store.list_entities()} >= {"user", "live_stream", "item", "category"}
    svc = store.get_feature_service("gbdt_v1")
    assert sum(len(p.features) for p in svc.feature_view_projections) > 60
    assert (settings.feast_repo / "feature_store.yaml").exists()
    from feature_repo.store import REGISTRY_CACHE_TTL_S
    assert f"cache_ttl_seconds: {REGISTRY_CACHE_TTL_S}" in (settings.feast_repo / "feature_store.yaml").read_text()
    assert get_store(settings) is store


def test_materialized_online_values_are_the_latest_rows(repo):
    settings, ev, streams, items, frames, end, info = repo
    from feature_repo.store import get_store
    assert info["mode"] == "full"
    store = get_store(settings)
    refs = ["stream_stats:s_clicks_1d", "stream_stats:s_ctr_7d", "stream_stats:s_viewers_30d",
            "stream_realtime:viewers_1h", "stream_realtime:rt_epoch"]
    got = store.get_online_features(features=refs, entity_rows=[{"stream_id": s} for s in range(1, 9)]).to_dict()
    for i, sid in enumerate(range(1, 9)):
        row = _latest(frames["stream_stats"], {"stream_id": sid}, end)
        for r in refs[:3]:
            name = r.split(":")[1]
            assert _same(got[name][i], row[name]), (sid, name)
        rt = _latest(frames["stream_realtime"], {"stream_id": sid}, end)
        assert _same(got["rt_epoch"][i], rt["rt_epoch"])
    users = list(range(1, 21))
    got = store.get_online_features(
        features=["user_stats:u_clicks_30d", "user_recent:recent_streams", "user_stream_stats:us_watch_s",
                  "user_stream_stats:us_last_interaction_epoch"],
        entity_rows=[{"user_id": u, "stream_id": 3} for u in users]).to_dict()
    for i, u in enumerate(users):
        assert _same(got["u_clicks_30d"][i], _latest(frames["user_stats"], {"user_id": u}, end)["u_clicks_30d"])
        assert _same(got["recent_streams"][i], _latest(frames["user_recent"], {"user_id": u}, end)["recent_streams"])
        us = _latest(frames["user_stream_stats"], {"user_id": u, "stream_id": 3}, end)
        assert _same(got["us_watch_s"][i], None if us is None else us["us_watch_s"])


def test_push_reaches_the_online_store(repo):
    settings = repo[0]
    from feature_repo.realtime import push_realtime
    from feature_repo.store import get_store
    at = pd.Timestamp("2026-06-01T12:00:30Z")
    rows = []
    for i in range(3):
        rows.append({"event_id": f"p{i}", "user_id": 500 + i, "ts": at - pd.Timedelta(seconds=20 + i),
                     "type": "click", "stream_id": 77, "item_id": None, "request_id": None, "position": None,
                     "page": None, "value": None})
    rows.append({"event_id": "p9", "user_id": 500, "ts": at - pd.Timedelta(minutes=20), "type": "watch",
                 "stream_id": 78, "item_id": None, "request_id": None, "position": None, "page": None,
                 "value": 30.0})
    events = pd.DataFrame(rows)
    events["ts"] = pd.to_datetime(events["ts"], utc=True).astype("datetime64[us, UTC]")
    n = push_realtime(settings, events, at.to_pydatetime(), stream_ids=[77, 78, 79], user_ids=[500, 501])
    assert n == 5
    store = get_store(settings)
    got = store.get_online_features(
        features=["stream_realtime:clicks_5m", "stream_realtime:viewers_5m", "stream_realtime:viewers_30m",
                  "stream_realtime:rt_epoch", "stream_realtime:rt_steps", "user_recent:recent_streams"],
        entity_rows=[{"stream_id": s, "user_id": u} for s, u in ((77, 500), (78, 501), (79, 502))]).to_dict()
    # the counters are the offline log's at 12:00 (whole minutes): the clicks of 12:00:08-10 count
    # from 12:01 on, the watch of 11:40:30 is in the 30-minute window
    assert got["clicks_5m"] == [0, 0, 0]
    assert got["viewers_5m"] == [0, 0, 0]
    assert got["viewers_30m"] == [0, 1, 0]
    # ... and rt_steps says what the log holds at each later minute (RT_COUNTERS order: viewers
    # 5m/30m/1h, clicks 5m/30m, orders 5m/30m)
    m = int(at.floor("60s").timestamp()) // 60
    assert list(got["rt_steps"][0]) == [m, 0, 0, 0, 0, 0, 0, 0, m + 1, 3, 3, 3, 3, 3, 0, 0,
                                        m + 6, 0, 3, 3, 0, 3, 0, 0, m + 31, 0, 0, 3, 0, 0, 0, 0,
                                        m + 61, 0, 0, 0, 0, 0, 0, 0]
    assert list(got["rt_steps"][1]) == [m, 0, 1, 1, 0, 0, 0, 0, m + 11, 0, 0, 1, 0, 0, 0, 0,
                                        m + 41, 0, 0, 0, 0, 0, 0, 0]
    assert not got["rt_steps"][2]                     # pushed, nothing to count: no schedule
    assert got["rt_epoch"][0] == at.timestamp()
    assert list(got["recent_streams"][0]) == [77, 78]
    assert list(got["recent_streams"][1]) == [77]
    assert got["recent_streams"][2] is None           # user 502 not pushed


def test_historical_features_return_every_entity_row_point_in_time(repo):
    settings, ev, streams, items, frames, end, info = repo
    from feature_repo.store import get_store
    rng = np.random.default_rng(0)
    n = 400
    offs = rng.integers(-86_400, 11 * 86_400, size=n)
    ts = (pd.Timestamp(T0) + pd.to_timedelta(offs, unit="s")).as_unit("us")
    entity = pd.DataFrame({"user_id": rng.integers(1, 22, size=n), "stream_id": rng.integers(1, 10, size=n),
                           "event_timestamp": pd.Series(ts).astype("datetime64[us, UTC]")})
    entity = pd.concat([entity, entity.iloc[:20]], ignore_index=True)           # exact duplicates
    entity["_row"] = np.arange(len(entity))
    refs = ["stream_stats:s_clicks_1d", "stream_stats:s_exposures_7d", "user_stats:u_watches_30d",
            "user_stream_stats:us_clicks", "stream_realtime:clicks_30m"]
    out = get_store(settings).get_historical_features(entity_df=entity, features=refs).to_df()
    assert len(out) == len(entity)
    out = out.sort_values("_row").reset_index(drop=True)
    assert out["_row"].tolist() == list(range(len(entity)))
    ttl = {n: view_ttl_s("stream_stats", B) / 86_400 for n in ("s_clicks_1d", "s_exposures_7d", "u_watches_30d")}
    for i in range(len(entity)):
        at = entity.event_timestamp[i]
        u, s = int(entity.user_id[i]), int(entity.stream_id[i])
        for name, view, keys in (("s_clicks_1d", "stream_stats", {"stream_id": s}),
                                 ("s_exposures_7d", "stream_stats", {"stream_id": s}),
                                 ("u_watches_30d", "user_stats", {"user_id": u}),
                                 ("us_clicks", "user_stream_stats", {"user_id": u, "stream_id": s}),
                                 ("clicks_30m", "stream_realtime", {"stream_id": s})):
            row = _latest(frames[view], keys, at)
            exp = None
            if row is not None:
                age = (at - row["event_timestamp"]).total_seconds()
                limit = ttl.get(name, 0) * 86_400 if view != "stream_realtime" else view_ttl_s(view, B)
                exp = row[name] if (limit == 0 or age <= limit) else None
            v = out[name][i]
            assert _same(None if pd.isna(v) else v, exp), (i, name, at)


def test_training_frame_is_point_in_time(repo, tmp_path):
    """A stream clicked only from T on: an impression at T-1s sees no click; one a bucket later does."""
    settings = Settings(home=tmp_path).ensure_dirs()
    from feature_repo.parquet import write_statistics
    from feature_repo.statistics import compute_statistics
    from ranking.samples import impression_labels, training_frame
    T = pd.Timestamp(T0) + pd.Timedelta(hours=6)
    ev = random_events(seed=9, n=200, n_users=4, n_streams=3, span_s=12 * 3600)
    ev["user_id"] += 10                              # users 1-3 below only have the events built here

    def e(i, user, ts, typ, stream):
        return {"event_id": f"x{i}", "user_id": user, "ts": ts, "type": typ, "stream_id": stream,
                "item_id": None, "request_id": None, "position": None, "page": None,
                "value": 60.0 if typ == "watch" else np.nan}

    extra = pd.DataFrame([
        e(1, 1, T - pd.Timedelta(seconds=1), "impression", 9),
        e(2, 1, T, "click", 9), e(3, 2, T + pd.Timedelta(seconds=5), "click", 9),
        e(4, 2, T + pd.Timedelta(seconds=6), "watch", 9),
        e(5, 3, T + pd.Timedelta(seconds=B), "impression", 9),
        e(6, 1, T + pd.Timedelta(seconds=B + 30), "impression", 9),
    ])
    extra["ts"] = pd.to_datetime(extra["ts"], utc=True).astype("datetime64[us, UTC]")
    ev = pd.concat([ev, extra], ignore_index=True).sort_values("ts", kind="stable").reset_index(drop=True)
    streams = pd.DataFrame({"stream_id": [1, 2, 3, 9], "category": [0, 1, 2, 2]})
    write_statistics(settings, compute_statistics(ev, streams, bucket_s=B))
    labels = impression_labels(ev, streams)
    frame = training_frame(settings, labels)
    assert len(frame) == len(labels) and frame["event_id"].tolist() == labels["event_id"].tolist()
    chunked = training_frame(settings, labels, chunk_rows=40)         # several Feast calls, same rows
    pd.testing.assert_frame_equal(chunked, frame)
    row = frame.set_index("event_id")
    before, after, mine = row.loc["x1"], row.loc["x5"], row.loc["x6"]
    assert before["s_clicks_1d"] == 0 and before["clicks_5m"] == 0 and before["s_viewers_1d"] == 0
    assert before["us_clicks"] == 0 and math.isnan(before["us_hours_since_last_interaction"])
    assert before["click"] == 1                     # the label does see the future click
    assert after["s_clicks_1d"] == 2 and after["s_viewers_1d"] == 2 and after["s_watches_1d"] == 1
    assert after["clicks_30m"] == 0 and after["viewers_1h"] == 2   # [T+B-1h, T+B) holds the clicks
    assert mine["us_clicks"] == 1 and mine["recent_stream_rank"] == 1
    assert abs(mine["us_hours_since_last_interaction"] - (B + 30) / 3600) < 1e-9


def test_online_assembly_equals_training_features_at_the_same_instant(repo):
    """Train/serve agreement: FEATURE_COLUMNS from get_historical_features at `end` equal those
    assembled from get_online_features after materializing up to `end`."""
    settings, ev, streams, items, frames, end, info = repo
    from feature_repo.features import FEATURE_COLUMNS, SEQUENCE_COLUMNS
    from feature_repo.online import OnlineFeatures, assemble_columns
    from ranking.samples import training_frame
    cats = dict(zip(streams.stream_id, streams.category))
    lists_seen = {c: 0 for c in SEQUENCE_COLUMNS}
    sids = list(range(1, 9))
    online = OnlineFeatures(settings)
    snap = online.stream_rows(sids)
    for user in (1, 2, 5, 13):
        served = online.assemble(online.user_rows(user, sids, [cats[s] for s in sids]), snap, end)
        labels = pd.DataFrame({"event_id": [f"q{s}" for s in sids], "request_id": None, "user_id": user,
                               "stream_id": sids, "category": [cats[s] for s in sids],
                               "ts": pd.Series([pd.Timestamp(end)] * len(sids)).astype("datetime64[us, UTC]"),
                               "position": None, "page": None, "click": 0, "purchase": 0, "stay_s": 0.0})
        trained = training_frame(settings, labels)
        a = served[FEATURE_COLUMNS].to_numpy(dtype=float)
        b = trained[FEATURE_COLUMNS].to_numpy(dtype=float)
        bad = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        cols = sorted({FEATURE_COLUMNS[j] for j in np.nonzero(bad)[1]})
        assert not bad.any(), f"user {user}: serving differs from training in {cols}"
        with_lists = training_frame(settings, labels, lists=True)
        pd.testing.assert_frame_equal(with_lists[list(trained.columns)], trained)
        for c in SEQUENCE_COLUMNS:                      # the id lists agree too
            assert with_lists[c].tolist() == served[c].tolist(), (user, c)
            lists_seen[c] += sum(len(v) > 0 for v in served[c])
        # the request path's numpy assembly gives the very same values
        lean = assemble_columns(online.user_columns(user, sids, [cats[s] for s in sids]), snap, end)
        c = lean[FEATURE_COLUMNS].to_numpy()
        assert ((a == c) | (np.isnan(a) & np.isnan(c))).all(), user
        for col in SEQUENCE_COLUMNS + ["user_id", "stream_id", "category_id"]:
            assert list(lean[col]) == served[col].tolist(), (user, col)
    assert served.shape == (8, 4 + len(FEATURE_COLUMNS) + len(SEQUENCE_COLUMNS))
    assert lists_seen["recent_items"] and lists_seen["recent_streams"], lists_seen


def test_pushed_rt_items_are_read_online_by_stream_rows_the_snapshot_and_assemble(repo):
    """A pushed rt_items list is readable online: OnlineFeatures.stream_rows (python lists, [] when
    missing), the API's candidate snapshot rows, and assemble (kept, expired after 30 min)."""
    settings = repo[0]
    from api.snapshot import StreamSnapshot
    from feature_repo.features import FEATURE_COLUMNS, SEQUENCE_COLUMNS
    from feature_repo.online import OnlineFeatures, assemble
    from feature_repo.realtime import push_realtime
    from store.ingest import upsert_catalog
    at = pd.Timestamp("2026-07-01T08:00:00Z")

    def e(i, user, minutes, typ, stream, item):
        return {"event_id": f"ri{i}", "user_id": user, "ts": at - pd.Timedelta(minutes=minutes), "type": typ,
                "stream_id": stream, "item_id": item, "request_id": None, "position": None, "page": None,
                "value": 10.0 if typ == "purchase" else None}

    events = pd.DataFrame([e(1, 600, 40, "item_click", 87, 900),       # older than 30 min: not in rt_items
                           e(2, 600, 20, "item_click", 87, 901),
                           e(3, 601, 10, "purchase", 87, 902),
                           e(4, 600, 5, "item_click", 87, 901),          # 901 again: most recent
                           e(5, 601, 3, "item_click", None, 903)])       # no stream: user list only
    events["ts"] = pd.to_datetime(events["ts"], utc=True).astype("datetime64[us, UTC]")
    events["stream_id"] = events["stream_id"].astype("Int64")
    assert push_realtime(settings, events, at.to_pydatetime(), stream_ids=[87, 88], user_ids=[600, 601]) == 4
    online = OnlineFeatures(settings)
    rows = online.stream_rows([87, 88, 89])                 # 89: never pushed
    assert rows["rt_items"].tolist() == [[901, 902], [], []]
    assert all(type(x) is int for x in rows.loc[0, "rt_items"])
    assert rows.loc[0, "orders_30m"] == 1 and rows.loc[0, "clicks_30m"] == 0      # item clicks are not clicks
    users = online.user_rows(601, [87, 88, 89], [1, 1, None])
    assert users["recent_items"].tolist() == [[903, 902]] * 3 and users["recent_streams"].tolist() == [[]] * 3
    assert online.user_row(600)["recent_items"] == [901, 900]

    # the API snapshot carries the column (on-demand rows here: no live window in this catalog)
    upsert_catalog(settings.database_url, streams=pd.DataFrame({"stream_id": [87, 88], "streamer_id": [1, 1],
                                                                "category": [1, 2]}))
    snap = StreamSnapshot(settings, online, clock=lambda: at.to_pydatetime())
    frame, cats, unknown = snap.rows([88, 87])
    assert unknown == [] and cats == [2, 1]
    assert frame["rt_items"].tolist() == [[], [901, 902]]
    assert snap.rows([87])[0]["rt_items"].tolist() == [[901, 902]]   # from the state now

    for minutes, expected in ((0, [901, 902]), (20.99, [901, 902]), (21, [901, 902]), (29.99, [901, 902]),
                              (30, []), (90, [])):
        now = (at + pd.Timedelta(minutes=minutes)).to_pydatetime()
        out = assemble(users, frame, now)
        assert list(out.columns) == ["user_id", "stream_id", "category_id", "event_timestamp"] + FEATURE_COLUMNS + SEQUENCE_COLUMNS
        assert out["stream_id"].tolist() == [87, 88, 89]
        assert out["rt_items"].tolist() == [expected, [], []], minutes
        assert out["recent_items"].tolist() == [[903, 902]] * 3
        # the purchase of 07:50 leaves the 30-minute window at 08:21 (whole minutes, as the offline
        # log), with no push in between: rt_steps
        assert out.loc[0, "orders_30m"] == (1 if minutes < 21 else 0), minutes

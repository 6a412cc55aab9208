"""run_statistics over the SQL event log: full materialize first, incremental afterwards, full again
when an event arrives late (before the previous end)."""
from datetime import timedelta

import pandas as pd

from feature_repo_testdata import T0, catalog, random_events


def _ingest(settings, events):
    from store.ingest import ingest_events
    return ingest_events(settings.database_url, events)


def test_run_statistics_materializes_incrementally(settings):
    from feature_repo.statistics_job import run_statistics
    from feature_repo.store import get_store
    from store.ingest import upsert_catalog
    streams, items = catalog()
    upsert_catalog(settings.database_url, streams=streams.assign(streamer_id=streams.stream_id),
                   items=items.assign(price=1.0))
    ev = random_events(seed=21, n=400, span_s=2 * 86_400)
    assert _ingest(settings, ev).inserted == 400
    end1 = (pd.Timestamp(T0) + pd.Timedelta(days=1)).to_pydatetime()
    s1 = run_statistics(settings, end=end1, progress=False)
    assert s1["materialize"] == "full" and s1["events"] == int((ev.ts < pd.Timestamp(end1)).sum())
    assert set(s1["rows"]) == {"stream_stats", "user_stats", "user_category_stats", "user_stream_stats",
                               "stream_realtime", "user_recent"}
    for view in s1["rows"]:
        df = pd.read_parquet(settings.feast_repo / "data" / f"{view}.parquet")
        assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
        assert df["event_timestamp"].max() <= pd.Timestamp(end1)

    end2 = end1 + timedelta(hours=12)
    s2 = run_statistics(settings, end=end2, progress=False)
    assert s2["materialize"] == "incremental"
    store = get_store(settings)
    ss = pd.read_parquet(settings.feast_repo / "data" / "stream_stats.parquet")
    got = store.get_online_features(features=["stream_stats:s_exposures_1d"],
                                    entity_rows=[{"stream_id": s} for s in range(1, 6)]).to_dict()
    for i, sid in enumerate(range(1, 6)):
        assert got["s_exposures_1d"][i] == ss[ss.stream_id == sid].iloc[-1]["s_exposures_1d"]

    # a late event (before end2) forces a full re-materialization
    late = random_events(seed=22, n=1, start=pd.Timestamp(T0) + pd.Timedelta(hours=30), span_s=60)
    late["event_id"] = "late-1"
    late["type"] = "impression"
    late["stream_id"] = pd.array([1], dtype="Int64")
    late["item_id"] = pd.array([pd.NA], dtype="Int64")
    late["value"] = float("nan")
    assert _ingest(settings, late).inserted == 1
    s3 = run_statistics(settings, end=end2 + timedelta(hours=1), progress=False)
    assert s3["materialize"] == "full"


def test_the_materialized_counters_follow_the_offline_log_without_a_push(settings):
    """run_statistics writes each stream's latest row online with its schedule (rt_steps): read
    through OnlineFeatures + assemble (the API's path) at later instants with no push at all,
    the real-time counters are the offline log's value at each instant (as training joins them)."""
    from feature_repo.features import RT_COUNTERS
    from feature_repo.online import OnlineFeatures, assemble
    from feature_repo.statistics import compute_statistics
    from feature_repo.statistics_job import run_statistics
    from store.ingest import load_events, upsert_catalog
    streams, items = catalog()
    upsert_catalog(settings.database_url, streams=streams.assign(streamer_id=streams.stream_id),
                   items=items.assign(price=1.0))
    ev = random_events(seed=31, n=300, n_users=6, n_streams=3, span_s=3 * 3600)
    assert _ingest(settings, ev).inserted == 300
    end = ev.ts.iloc[-40] + pd.Timedelta(seconds=5)            # mid-stream: recent events in every window
    run_statistics(settings, end=end.to_pydatetime(), progress=False)
    before = load_events(settings.database_url, end=end.to_pydatetime())
    log = compute_statistics(before, None, bucket_s=3600, end=(end + pd.Timedelta(hours=2)).to_pydatetime(),
                             views=["stream_realtime"])["stream_realtime"]
    online = OnlineFeatures(settings)
    rows = online.stream_rows([1, 2, 3])
    assert any(len(s) for s in rows["rt_steps"])
    users = online.user_rows(1, [1, 2, 3], [None, None, None])
    cols = [f"{m}_{w}" for m, w in RT_COUNTERS]
    moved = 0
    for minutes in (0, 0.5, 3, 6, 17, 31, 45, 59, 61, 90):
        t = end + pd.Timedelta(minutes=minutes)
        got = assemble(users, rows, t.to_pydatetime()).set_index("stream_id")
        for sid in (1, 2, 3):
            past = log[(log.stream_id == sid) & (log.event_timestamp <= t)]
            exp = past.iloc[-1][cols] if len(past) else pd.Series(0, index=cols)
            assert got.loc[sid, cols].tolist() == [float(x) for x in exp], (minutes, sid)
            moved += minutes > 0 and got.loc[sid, cols].tolist() != rows.set_index("stream_id").loc[sid, cols].tolist()
    assert moved >= 6          # the counters dropped off after `end`, nothing pushed

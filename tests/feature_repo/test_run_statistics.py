"""run_statistics over the SQL event log: full materialize first, incremental afterwards, full again
when an event arrives late (before the previous end)."""
from datetime import timedelta

import pandas as pd

from feature_repo_testdata import T0, catalog, random_events


def _ingest(settings, events):
    from store.ingest import ingest_events
    return ingest_events(settings.database_url, events)


def test_run_statistics_materializes_incrementally(settings):
    from feature_repo.statistics import run_statistics
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

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import func, select

from store.db import get_engine
from store.ingest import (IngestError, data_version, ingest_events, live_stream_ids, load_catalog,
                          load_events, upsert_catalog, validate_events)
from store.schema import Event, Impression, User

T0 = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


@pytest.fixture
def url(database_url):
    url = database_url
    upsert_catalog(url,
                   items=pd.DataFrame({"item_id": [1, 2], "category": [3, 3], "price": [9.5, 20.0]}),
                   streams=pd.DataFrame({"stream_id": [10, 11], "streamer_id": [100, 101], "category": [3, 4]}),
                   stream_items=pd.DataFrame({"stream_id": [10, 10], "item_id": [1, 2], "is_core": [True, False]}),
                   live_windows=pd.DataFrame({"stream_id": [10, 11], "start_ts": [T0, T0 + timedelta(hours=2)],
                                              "end_ts": [T0 + timedelta(hours=1), T0 + timedelta(hours=3)]}))
    return url


def batch():
    return [
        {"event_id": "e1", "user_id": 7, "ts": "2026-01-01T12:00:00Z", "type": "impression", "stream_id": 10,
         "request_id": "r1", "position": 1, "page": "live_tab"},
        {"event_id": "e2", "user_id": 7, "ts": "2026-01-01T12:00:05Z", "type": "click", "stream_id": 10,
         "request_id": "r1", "position": 1},
        {"event_id": "e3", "user_id": 7, "ts": "2026-01-01T12:03:00Z", "type": "watch", "stream_id": 10, "value": 170.0},
        {"event_id": "e4", "user_id": 8, "ts": 1767269000, "type": "purchase", "stream_id": 10, "item_id": 2,
         "value": 20.0},
    ]


def counts(url):
    eng = get_engine(url)
    with eng.connect() as c:
        return (c.execute(select(func.count()).select_from(Event)).scalar(),
                c.execute(select(func.count()).select_from(Impression)).scalar(),
                c.execute(select(func.count()).select_from(User)).scalar())


def test_ingest_writes_events_impressions_and_users(url):
    res = ingest_events(url, batch())
    assert (res.received, res.inserted, res.duplicates) == (4, 4, 0)
    assert counts(url) == (4, 1, 2)
    ev = load_events(url)
    assert list(ev.event_id) == ["e1", "e2", "e3", "e4"]
    assert str(ev.ts.dtype) == "datetime64[us, UTC]"
    assert ev.loc[ev.event_id == "e3", "value"].item() == 170.0


def test_same_batch_twice_is_a_noop(url):
    ingest_events(url, batch())
    before = load_events(url)
    v1 = data_version(url)
    res = ingest_events(url, batch())
    assert (res.inserted, res.duplicates) == (0, 4)
    after = load_events(url)
    pd.testing.assert_frame_equal(before, after)
    assert counts(url) == (4, 1, 2)
    assert data_version(url) == v1


def test_duplicates_within_a_batch_first_wins(url):
    rows = batch() + [dict(batch()[2], value=999.0)]
    res = ingest_events(url, rows)
    assert (res.received, res.inserted, res.duplicates) == (5, 4, 1)
    assert load_events(url).set_index("event_id").loc["e3", "value"] == 170.0


def test_one_bad_row_rejects_the_batch_and_writes_nothing(url):
    ingest_events(url, batch()[:1])
    v = data_version(url)
    rows = batch()
    rows[2] = dict(rows[2], stream_id=999)          # not in the catalog
    rows.append({"event_id": "e9", "user_id": True, "ts": "yesterday", "type": "teleport"})
    with pytest.raises(IngestError) as exc:
        ingest_events(url, rows)
    errs = {(e.row, e.field) for e in exc.value.errors}
    assert (2, "stream_id") in errs
    assert {(4, "user_id"), (4, "ts"), (4, "type")} <= errs
    assert counts(url) == (1, 1, 1)
    assert data_version(url) == v


@pytest.mark.parametrize("row,field", [
    ({"user_id": 1, "ts": "2026-01-01", "type": "click", "stream_id": 10}, "event_id"),
    ({"event_id": "x", "ts": "2026-01-01", "type": "click", "stream_id": 10}, "user_id"),
    ({"event_id": "x", "user_id": -3, "ts": "2026-01-01", "type": "click", "stream_id": 10}, "user_id"),
    ({"event_id": "x", "user_id": "7", "ts": "2026-01-01", "type": "click", "stream_id": 10}, "user_id"),
    ({"event_id": "x", "user_id": 1, "type": "click", "stream_id": 10}, "ts"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-13-45", "type": "click", "stream_id": 10}, "ts"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "click"}, "stream_id"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "purchase", "stream_id": 10, "value": 1.0}, "item_id"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "watch", "stream_id": 10}, "value"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "watch", "stream_id": 10, "value": -5}, "value"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "impression", "stream_id": 10, "position": 0}, "position"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "click", "stream_id": 10, "colour": "red"}, "colour"),
    ({"event_id": "x", "user_id": 2**63, "ts": "2026-01-01", "type": "click", "stream_id": 10}, "user_id"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "click", "stream_id": 2**64 + 1}, "stream_id"),
    ({"event_id": "x" * 200, "user_id": 1, "ts": "2026-01-01", "type": "click", "stream_id": 10}, "event_id"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "impression", "stream_id": 10, "position": 1,
      "propensity": 0.0}, "propensity"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "impression", "stream_id": 10, "position": 1,
      "propensity": 1.5}, "propensity"),
    ({"event_id": "x", "user_id": 1, "ts": "2026-01-01", "type": "impression", "stream_id": 10, "position": 1,
      "policy": "p" * 40}, "policy"),
])
def test_validation_names_the_field(row, field):
    _, errors = validate_events([row])
    assert field in {e.field for e in errors}, errors


def test_bulk_dataframe_path_and_catalog_reads(url):
    n = 5000
    df = pd.DataFrame({"event_id": [f"b{i}" for i in range(n)], "user_id": [i % 50 for i in range(n)],
                       "ts": pd.date_range(T0, periods=n, freq="s", tz="UTC"), "type": "impression",
                       "stream_id": [10 + i % 2 for i in range(n)], "position": [1 + i % 5 for i in range(n)]})
    res = ingest_events(url, df)
    assert res.inserted == n
    assert len(load_events(url, start=T0, end=T0 + timedelta(seconds=100))) == 100
    cat = load_catalog(url)
    assert set(cat["stream_items"].item_id) == {1, 2}
    assert live_stream_ids(url, T0 + timedelta(minutes=30)) == [10]
    assert live_stream_ids(url, T0 + timedelta(hours=2, minutes=1)) == [11]
    assert live_stream_ids(url, T0 + timedelta(hours=1)) == []


@pytest.mark.parametrize("field,value", [("position", 9223372036854775807), ("position", 2**31),
                                         ("user_id", 2**63), ("stream_id", -1), ("value", 1e300)])
def test_values_outside_the_columns_range_are_refused(url, field, value):
    row = dict(batch()[0] if field != "value" else batch()[2], **{field: value})
    with pytest.raises(IngestError) as err:
        ingest_events(url, [row])
    assert any(e.field == field for e in err.value.errors)
    assert counts(url)[0] == 0


def test_the_loader_survives_any_row_already_in_the_log(url):
    """The poison event: a row the API accepted before the range checks (position 2**63 - 1, a
    REAL where an integer belongs, an id near 2**63) must not break every job that reads the log."""
    from sqlalchemy import insert
    ingest_events(url, batch())
    eng = get_engine(url)
    base = {"ts": datetime(2026, 1, 1, 12, 5), "type": "impression", "stream_id": 10, "request_id": "r9"}
    sqlite = eng.dialect.name == "sqlite"       # PostgreSQL's int32 column cannot hold the poison
    with eng.begin() as c:
        c.execute(insert(Event), [dict(base, event_id="p1", user_id=7, position=2**63 - 1 if sqlite else None),
                                  dict(base, event_id="p2", user_id=2**63 - 2, position=3),
                                  dict(base, event_id="p3", user_id=8, position=2)])
        if sqlite:                            # SQLite keeps whatever type it is given
            c.exec_driver_sql("UPDATE events SET position = 2.5 WHERE event_id = 'p3'")
    ev = load_events(url)
    assert len(ev) == 7 and str(ev.position.dtype) == "Int64" and str(ev.user_id.dtype) == "int64"
    p = ev.set_index("event_id")
    assert pd.isna(p.loc["p1", "position"])                  # out of the column's range: ignored
    assert p.loc["p2", "user_id"] == 2**63 - 2                # every digit kept (not through float64)
    assert p.loc["p2", "position"] == 3
    if sqlite:
        assert pd.isna(p.loc["p3", "position"])
    assert list(load_events(url, user_ids=[7]).event_id) == ["e1", "e2", "e3", "p1"]


def test_impressions_fast_path_matches_ingest_events(url):
    from store.ingest import ingest_impressions
    rows = [{"event_id": f"imp-r1-{p}", "user_id": 7, "ts": "2026-01-01T12:00:00.123456+00:00", "type": "impression",
             "stream_id": 10, "request_id": "r1", "position": p, "page": "live_tab"} for p in (1, 2)]
    assert ingest_impressions(url, rows, model_version="ranker:v") == 2
    assert ingest_impressions(url, rows, model_version="ranker:v") == 0            # idempotent
    gone = [dict(rows[0], event_id="imp-r2-1", request_id="r2", stream_id=999)]    # not in the catalog
    assert ingest_impressions(url, gone) == 0
    ev = load_events(url)
    assert list(ev.event_id) == ["imp-r1-1", "imp-r1-2"] and list(ev.position) == [1, 2]
    assert ev.ts.iloc[0] == pd.Timestamp("2026-01-01T12:00:00.123456", tz="UTC")
    eng = get_engine(url)
    with eng.connect() as c:
        imp = c.execute(select(Impression.model_version, Impression.page)).all()
    assert imp == [("ranker:v", "live_tab")] * 2 and counts(url) == (2, 2, 1)


def test_recent_user_events_give_the_same_lists_as_the_whole_history(url):
    """The real-time push reads each user's most recent events, not the whole history: the
    user's last-N-distinct lists must come out identical."""
    import numpy as np

    from feature_repo.definitions import RECENT_N
    from feature_repo.realtime import realtime_frames
    from feature_repo.statistics import ITEM_ACTIONS, STREAM_ACTIONS
    from store.ingest import load_recent_user_events
    upsert_catalog(url, streams=pd.DataFrame({"stream_id": range(100, 160), "streamer_id": 1, "category": 3}),
                   items=pd.DataFrame({"item_id": range(100, 160), "category": 3, "price": 1.0}))
    rng = np.random.default_rng(3)
    rows = []
    for i in range(2000):                      # many pages; 60 streams and items, so lists fill early
        typ = rng.choice(["click", "watch", "item_click", "purchase", "impression"], p=[0.3, 0.2, 0.3, 0.05, 0.15])
        row = {"event_id": f"h{i}", "user_id": 7 if i % 3 else 8, "type": typ,
               "ts": (T0 + timedelta(seconds=int(i // 2) * 10)).isoformat(), "stream_id": int(rng.integers(100, 160))}
        if typ in ("watch", "purchase"):
            row["value"] = 5.0
        if typ in ("item_click", "purchase"):
            row["item_id"] = int(rng.integers(100, 160))
        rows.append(row)
    ingest_events(url, rows)
    at = T0 + timedelta(hours=2)                       # some events are at or after it: cut
    recent = load_recent_user_events(url, [7, 8], end=at, stream_types=STREAM_ACTIONS, item_types=ITEM_ACTIONS,
                                     min_distinct=RECENT_N, page=50)
    full = load_events(url, end=at)
    assert 0 < len(recent) < len(full) / 3
    a = realtime_frames(full, at, user_ids=[7, 8])["user_recent"]
    b = realtime_frames(recent, at, user_ids=[7, 8])["user_recent"]
    pd.testing.assert_frame_equal(a, b)
    assert a.recent_streams.map(len).tolist() == [RECENT_N] * 2 and a.recent_items.map(len).tolist() == [RECENT_N] * 2


def test_propensity_and_policy_are_stored_with_the_impression(url):
    rows = [{"event_id": "p1", "user_id": 7, "ts": "2026-01-01T12:00:00Z", "type": "impression", "stream_id": 10,
             "request_id": "rp", "position": 2, "propensity": 0.25, "policy": "randomised"}]
    assert ingest_events(url, rows).inserted == 1
    with get_engine(url).connect() as conn:
        assert conn.execute(select(Impression.propensity, Impression.policy)).one() == (0.25, "randomised")
    ev = load_events(url)
    assert ev["propensity"].tolist() == [0.25] and ev["policy"].tolist() == ["randomised"]

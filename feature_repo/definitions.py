"""The definitions of StreamRank's Feast objects: entities, views, their features, TTLs, schemas.

Everything here is plain Python (names, windows, schemas, TTLs) so that the API, the statistics
job and the tests can read the schema without importing Feast (~6.5 s).
:func:`feature_repo.objects.build_objects` imports Feast and builds the objects for one repo
folder (the Parquet sources live in ``<feast_repo>/data/<view>.parquet``).

Feature names are unique across views (prefixes ``s_`` stream, ``u_`` user, ``uc_`` user x
category, ``us_`` user x stream; the real-time names are unprefixed) so that one
``get_online_features`` / ``get_historical_features`` call can mix views without
``full_feature_names``.

Point in time: a row stamped T holds statistics over events with ts < T only (see
:mod:`feature_repo.statistics`).
"""
from __future__ import annotations

from pathlib import Path

PROJECT = "streamrank"

# ----------------------------------------------------------------------------- windows
WINDOWS = {"1d": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}       # batch statistics windows (s)
RT_WINDOWS = {"5m": 300, "30m": 1_800, "1h": 3_600}                   # real-time counter windows (s)
RT_BUCKET_S = 60            # cadence of the offline log of the real-time counters
RT_ITEMS_WINDOW = "30m"     # stream_realtime:rt_items covers the events in [T - RT_WINDOWS[this], T)
RT_ITEMS_N = 10             # at most this many items in rt_items
RECENT_N = 20               # length of the user's recent streams / items lists

# ----------------------------------------------------------------------------- entities
# entity name -> join key. All ids are int64.
ENTITIES = {"user": "user_id", "live_stream": "stream_id", "item": "item_id", "category": "category_id"}

# dtypes: "int64" (counts), "float64" (ratios, sums, epochs), "int64_list" (Array(Int64))
_STREAM_METRICS = [("exposures", "int64"), ("clicks", "int64"), ("watches", "int64"),
                   ("purchases", "int64"), ("ctr", "float64"), ("cvr", "float64"),
                   ("stay_mean", "float64"), ("viewers", "int64"), ("gmv", "float64")]
_USER_METRICS = [("exposures", "int64"), ("clicks", "int64"), ("watches", "int64"),
                 ("purchases", "int64"), ("ctr", "float64"), ("cvr", "float64"),
                 ("stay_mean", "float64"), ("streams", "int64"), ("gmv", "float64")]
_USER_CATEGORY_METRICS = [("exposures", "int64"), ("clicks", "int64"), ("ctr", "float64"),
                          ("watch_s", "float64"), ("purchases", "int64")]


def _windowed(prefix: str, metrics, windows=WINDOWS) -> list[tuple[str, str]]:
    return [(f"{prefix}{m}_{w}", dt) for w in windows for m, dt in metrics]


RT_COUNTERS = [("viewers", "5m"), ("viewers", "30m"), ("viewers", "1h"), ("clicks", "5m"),
               ("clicks", "30m"), ("orders", "5m"), ("orders", "30m")]
RT_STEP_WIDTH = 1 + len(RT_COUNTERS)      # one step of stream_realtime:rt_steps: minute + the counters

# view -> feature schema [(name, dtype)]
VIEW_FEATURES: dict[str, list[tuple[str, str]]] = {
    # per stream, windows 1d/7d/30d. ctr = clicks/exposures, cvr = purchases/clicks,
    # stay_mean = watch seconds / watch events, viewers = distinct users with a click or watch,
    # gmv = purchase amount. Ratios are NaN when the denominator is 0.
    "stream_stats": _windowed("s_", _STREAM_METRICS),
    # per user: the same, with distinct streams (clicked or watched) instead of viewers
    "user_stats": _windowed("u_", _USER_METRICS),
    # per (user, category of the stream)
    "user_category_stats": _windowed("uc_", _USER_CATEGORY_METRICS),
    # per (user, stream), cumulative since the beginning: the repeat-consumption signal. Rows come
    # from interactions only (click/watch/purchase): exposure-only pairs would multiply the rows
    # (every stream shown to every user) for a signal the user/stream/category views already carry.
    # us_last_interaction_epoch: epoch seconds of the last click/watch/purchase (NaN: never).
    "user_stream_stats": [("us_clicks", "int64"), ("us_watches", "int64"),
                          ("us_purchases", "int64"), ("us_watch_s", "float64"),
                          ("us_last_interaction_epoch", "float64")],
    # push view, per stream: counters over [T - window, T). viewers = distinct users with a click or
    # watch, orders = purchase events in the stream. rt_epoch = the row's own time (epoch seconds),
    # used to expire a window whose whole content has aged out (features.derive_features,
    # features.expire_lists). rt_items = the stream's real-time products: the distinct item ids of
    # the item_click / purchase events in the stream in [T - RT_ITEMS_WINDOW, T), most recent first
    # (by last event; ties by event order), at most RT_ITEMS_N; [] when none (a sequence input of
    # the transformer ranker, not a GBDT feature).
    # rt_steps = the counters' schedule (features.scheduled_counters): what the offline log will
    # hold at each later minute if no further event arrives, flat [minute, counter_1, ...,
    # counter_7] per step (minute = epoch // RT_BUCKET_S, ascending); [] in the offline log's
    # history, set on the rows that reach the online store (pushes and each stream's latest
    # materialized row), so serving follows the drop-offs between pushes exactly as training sees them.
    "stream_realtime": [(f"{m}_{w}", "int64") for m, w in RT_COUNTERS] + [("rt_epoch", "float64"),
                                                                         ("rt_items", "int64_list"),
                                                                         ("rt_steps", "int64_list")],
    # push view, per user: the last RECENT_N distinct streams (click/watch) and items
    # (item_click/purchase) before T, most recent first; recent_stream_ts[i] = epoch seconds of the
    # latest click/watch of recent_streams[i] (the retrieval user tower's and the ranker's time gaps),
    # recent_stream_acts[i] the deepest behaviour on it (1 click, 2 watch, 3 item click, 4 purchase
    # in the stream), recent_stream_dwell[i] its total watch seconds, recent_item_acts[i] the deepest
    # behaviour on recent_items[i] (3 item click, 4 purchase): the ranker's behaviour tokens.
    "user_recent": [("recent_streams", "int64_list"), ("recent_items", "int64_list"),
                    ("recent_stream_ts", "int64_list"), ("recent_stream_acts", "int64_list"),
                    ("recent_stream_dwell", "int64_list"), ("recent_item_acts", "int64_list")],
}

VIEW_ENTITIES: dict[str, list[str]] = {
    "stream_stats": ["live_stream"],
    "user_stats": ["user"],
    "user_category_stats": ["user", "category"],
    "user_stream_stats": ["user", "live_stream"],
    "stream_realtime": ["live_stream"],
    "user_recent": ["user"],
}

BATCH_VIEWS = ["stream_stats", "user_stats", "user_category_stats", "user_stream_stats"]
PUSH_VIEWS = ["stream_realtime", "user_recent"]
PUSH_SOURCES = {"stream_realtime": "stream_realtime_push", "user_recent": "user_recent_push"}

# Time to live. Feast's point-in-time join pairs each entity row with EVERY feature row of its entity
# inside the TTL before keeping the latest, so the TTL bounds the work of get_historical_features
# (a 31-day TTL on hourly rows made 135k impressions join 60M rows: 65 s and 15 GB). The windowed
# views therefore emit a heartbeat row at least every HEARTBEAT_S (in whole buckets) while any
# window is non-zero, and expire after that: a row is always younger than the TTL until the
# entity's final all-zero row, which expiry turns into nulls that read as zeros
# (features.derive_features). The real-time view expires after its longest window (an hour after
# its last row every counter is 0 anyway: its drop-off rows are never further apart).
# Cumulative and list views never expire (0 = forever in Feast).
HEARTBEAT_S = 6 * 3600
WINDOWED_VIEWS = ["stream_stats", "user_stats", "user_category_stats"]


def heartbeat_buckets(bucket_s: int) -> int:
    return max(1, HEARTBEAT_S // int(bucket_s))


def view_ttl_s(view: str, bucket_s: int) -> int:
    """TTL (seconds, 0 = forever) of ``view`` when the batch statistics use ``bucket_s`` buckets."""
    if view in WINDOWED_VIEWS:
        return heartbeat_buckets(bucket_s) * int(bucket_s)
    if view == "stream_realtime":
        return max(RT_WINDOWS.values())
    return 0


TIMESTAMP_FIELD = "event_timestamp"
FEATURE_SERVICES = ["gbdt_v1"]              # the GBDT refs (features.GBDT_FEATURE_REFS)


def join_keys(view: str) -> list[str]:
    return [ENTITIES[e] for e in VIEW_ENTITIES[view]]


def view_columns(view: str) -> list[str]:
    """Columns of the view's Parquet file, in order."""
    return join_keys(view) + [TIMESTAMP_FIELD] + [n for n, _ in VIEW_FEATURES[view]]


def arrow_schema(view: str):
    """pyarrow schema of the view's Parquet file (timestamps us, UTC — NOTES.md)."""
    import pyarrow as pa
    types = {"int64": pa.int64(), "float64": pa.float64(), "int64_list": pa.list_(pa.int64())}
    fields = [pa.field(k, pa.int64()) for k in join_keys(view)]
    fields.append(pa.field(TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC")))
    fields += [pa.field(n, types[dt]) for n, dt in VIEW_FEATURES[view]]
    return pa.schema(fields)


def source_path(data_dir: Path, view: str) -> Path:
    return Path(data_dir) / f"{view}.parquet"

"""The single definition of the GBDT model's inputs (training and serving use this module).

- :data:`GBDT_FEATURE_REFS`: the Feast feature references ("view:feature") read by
  ``get_historical_features`` (training) and ``get_online_features`` (serving).
- :func:`derive_features`: turns those raw columns into the model's columns, identically in both
  places. Its input frame holds the raw Feast columns plus ``stream_id`` and ``event_timestamp``
  (the as-of time: the impression time in training, "now" at serving).
- :data:`FEATURE_COLUMNS`: the final numeric columns (float64) the model consumes, in order.
- :data:`SEQUENCE_REFS` / :data:`SEQUENCE_COLUMNS`: the id lists (Array(Int64)) tokenised by the
  transformer ranker, read by the same calls (``training_frame(..., lists=True)`` and
  ``online.assemble``), never GBDT features:
    recent_items    the user's last RECENT_N distinct items (item_click / purchase) before T
    recent_streams  the user's last RECENT_N distinct streams (click / watch) before T (also the
                    input of the GBDT's recent_stream_rank)
    rt_items        the candidate stream's real-time products: the last RT_ITEMS_N distinct items
                    with an item_click / purchase in the stream in [T - 30 min, T)
  :func:`expire_lists` turns them into python lists of int ([] when missing) and empties an
  expired rt_items, identically in training and serving.

Fill rules (a missing row — no activity yet, or expired by TTL — reads like an all-zero row):
  counts and sums (exposures, clicks, watches, purchases, viewers, streams, gmv, watch_s, the
  real-time counters) -> 0;  ratios (ctr, cvr, stay_mean) and shares -> NaN when undefined
  (LightGBM's missing value);  ``us_hours_since_last_interaction`` -> NaN when never.

Derived columns:
  us_hours_since_last_interaction  (as_of - us_last_interaction_epoch) / 3600
  recent_stream_rank               1-based position of the candidate in the user's recent_streams
                                   (1 = most recent), 0 when absent
  uc_click_share_30d               uc_clicks_30d / u_clicks_30d (the user's taste for the category)
  uc_exposure_share_30d            uc_exposures_30d / u_exposures_30d
  real-time counters               the offline log's value at as_of: a row with a schedule
                                   (stream_realtime:rt_steps, set on the rows that go online)
                                   reads the counters of its last step at or before as_of's
                                   minute (:func:`scheduled_counters`: the drop-offs between
                                   pushes); a row without one (the offline log, where a drop-off
                                   row exists) reads its columns, and a window whose whole content
                                   has aged out (as_of - rt_epoch >= window) reads 0.

List expiry (:func:`expire_lists`, same rule): rt_items reads [] when as_of - rt_epoch >=
RT_WINDOWS[RT_ITEMS_WINDOW] (30 min) or there is no row; offline this never changes a value (a row
exists when the last item event ages out), online it empties a list nobody re-pushed. The user's
lists never expire.

This module imports only numpy/pandas (the API imports it at start-up).
"""
from __future__ import annotations

import bisect
import gc
from typing import Optional

import numpy as np
import pandas as pd

from .definitions import RT_BUCKET_S, RT_COUNTERS, RT_ITEMS_WINDOW, RT_STEP_WIDTH, RT_WINDOWS, VIEW_FEATURES

# ----------------------------------------------------------------------------- raw refs
_SKIP_REFS = {("user_recent", "recent_items"), ("stream_realtime", "rt_items"),   # not used by the GBDT
              ("stream_realtime", "rt_steps"), ("user_recent", "recent_stream_ts"),
              ("user_recent", "recent_stream_acts"), ("user_recent", "recent_stream_dwell"),
              ("user_recent", "recent_item_acts")}


def _refs(views) -> list[str]:
    return [f"{v}:{n}" for v in views for n, _ in VIEW_FEATURES[v] if (v, n) not in _SKIP_REFS]


STREAM_VIEWS = ["stream_stats", "stream_realtime"]                     # candidate side
USER_VIEWS = ["user_stats", "user_category_stats", "user_stream_stats", "user_recent"]   # user side
STREAM_FEATURE_REFS = _refs(STREAM_VIEWS)
USER_FEATURE_REFS = _refs(USER_VIEWS)
GBDT_FEATURE_REFS = STREAM_FEATURE_REFS + USER_FEATURE_REFS
RAW_COLUMNS = [r.split(":")[1] for r in GBDT_FEATURE_REFS]

# id lists for the sequence (transformer) ranker; see the module docstring and expire_lists
# (+ the times of the recent streams: the ranker's time gaps, ranking.dataset's user_streams_dt; and
# the behaviour / dwell lists aligned with the recent streams and items: its behaviour tokens)
SEQUENCE_REFS = ["user_recent:recent_items", "user_recent:recent_streams", "stream_realtime:rt_items",
                 "user_recent:recent_stream_ts", "user_recent:recent_stream_acts",
                 "user_recent:recent_stream_dwell", "user_recent:recent_item_acts"]
SEQUENCE_COLUMNS = ["recent_items", "recent_streams", "rt_items", "recent_stream_ts", "recent_stream_acts",
                    "recent_stream_dwell", "recent_item_acts"]
assert [r.split(":")[1] for r in SEQUENCE_REFS] == SEQUENCE_COLUMNS
# the real-time counters' schedule: read online with the stream's row, never by training (the
# offline log's own rows are exact at every instant)
SCHEDULE_REF = "stream_realtime:rt_steps"
SCHEDULE_COLUMN = "rt_steps"
# the times of the user's recent streams: read online by retrieval's user tower (retrieval/), not a
# ranker input
RECENT_TS_REFS = ["user_recent:recent_streams", "user_recent:recent_stream_ts"]

_RATIO_PARTS = ("ctr_", "cvr_", "stay_mean_")
_INTERNAL = {"us_last_interaction_epoch", "rt_epoch", "recent_streams"}   # inputs of derived columns


def _is_ratio(name: str) -> bool:
    return any(p in name for p in _RATIO_PARTS)


ZERO_FILLED = [c for c in RAW_COLUMNS if c not in _INTERNAL and not _is_ratio(c)]
NAN_FILLED = [c for c in RAW_COLUMNS if c not in _INTERNAL and _is_ratio(c)]
DERIVED_COLUMNS = ["us_hours_since_last_interaction", "recent_stream_rank", "uc_click_share_30d",
                   "uc_exposure_share_30d"]
FEATURE_COLUMNS = [c for c in RAW_COLUMNS if c not in _INTERNAL] + DERIVED_COLUMNS


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    t = pd.to_datetime(ts, utc=True)
    return t.astype("datetime64[us, UTC]").astype("int64").to_numpy() / 1e6


def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    s = frame[col]
    if s.dtype.kind in "fiub":
        return s.to_numpy(dtype="float64", copy=True)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan, copy=True)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(len(num), np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _rank_in(lists, targets) -> np.ndarray:
    out = np.zeros(len(targets))
    for i, (lst, t) in enumerate(zip(lists, targets)):
        if lst is None or (isinstance(lst, float) and np.isnan(lst)) or pd.isna(t):
            continue
        for j, v in enumerate(lst):
            if v == t:
                out[i] = j + 1
                break
    return out


def derive_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` with every column of :data:`FEATURE_COLUMNS` (float64).

    ``frame`` needs ``event_timestamp`` (as-of time) and ``stream_id``; raw Feast columns that are
    absent read as missing (filled by the rules above).
    """
    n = len(frame)
    as_of = _epoch_seconds(frame["event_timestamp"]) if n else np.zeros(0)
    lists = frame["recent_streams"].tolist() if "recent_streams" in frame.columns else [None] * n
    schedules = frame[SCHEDULE_COLUMN].tolist() if SCHEDULE_COLUMN in frame.columns else None
    new = derive_arrays(lambda c: _num(frame, c), as_of, lists, frame["stream_id"].tolist() if n else [],
                        schedules=schedules)
    rest = frame.drop(columns=[c for c in FEATURE_COLUMNS if c in frame.columns])
    return pd.concat([rest, pd.DataFrame({c: new[c] for c in FEATURE_COLUMNS}, index=frame.index)], axis=1)


def derive_arrays(raw, as_of: np.ndarray, recent_streams: list, stream_ids: list,
                  schedules: Optional[list] = None) -> dict:
    """The core of :func:`derive_features` on arrays (the serving path calls it without pandas):
    ``raw(col)`` gives a fresh float64 array of a raw Feast column (NaN where missing or absent),
    ``as_of`` epoch seconds per row, ``recent_streams`` the user's lists per row, ``stream_ids``
    the candidates, ``schedules`` the rows' rt_steps (or None). Returns every
    :data:`FEATURE_COLUMNS` column (float64 arrays)."""
    n = len(as_of)
    new: dict[str, np.ndarray] = {}
    for c in ZERO_FILLED:
        v = raw(c)
        v[np.isnan(v)] = 0.0
        new[c] = v
    for c in NAN_FILLED:
        new[c] = raw(c)
    # real-time counters: a window whose whole content is older than the window reads 0
    age = as_of - raw("rt_epoch")
    for m, w in RT_COUNTERS:
        col = f"{m}_{w}"
        new[col][~(age < RT_WINDOWS[w])] = 0.0            # NaN age (no row) -> 0 as well
    if schedules is not None:
        scheduled_counters(schedules, as_of, new)
    new["us_hours_since_last_interaction"] = (as_of - raw("us_last_interaction_epoch")) / 3600.0
    new["recent_stream_rank"] = _rank_in(recent_streams, stream_ids) if n else np.zeros(0)
    new["uc_click_share_30d"] = _ratio(new["uc_clicks_30d"], new["u_clicks_30d"])
    new["uc_exposure_share_30d"] = _ratio(new["uc_exposures_30d"], new["u_exposures_30d"])
    return new


def scheduled_counters(schedules: list, as_of: np.ndarray, out: dict) -> None:
    """Set the real-time counters of ``out`` (arrays, one row per schedule) from the rows'
    ``rt_steps`` (definitions: flat ``[minute, c_1, ..., c_7]`` steps, ascending): row ``i`` takes
    the last step whose minute is at or before ``as_of[i] // RT_BUCKET_S`` — the offline log's
    value at that instant (its first step when ``as_of`` is before it). Rows whose schedule is
    empty or missing are left as they are."""
    rows, vals = [], []
    minutes = (as_of // RT_BUCKET_S).tolist()
    cached = _STEP_CACHE.get
    for i, steps in enumerate(schedules):
        if steps is None or isinstance(steps, float) or len(steps) == 0:
            continue
        minute = minutes[i]
        # the serving path reads the snapshot's list objects: one lookup per (list, minute)
        hit = cached(id(steps))
        if hit is not None and hit[0] is steps and hit[1] == minute:
            rows.append(i)
            vals.append(hit[2])
            continue
        j = bisect.bisect_right(steps[::RT_STEP_WIDTH], minute) - 1 if len(steps) > RT_STEP_WIDTH else 0
        base = max(j, 0) * RT_STEP_WIDTH
        v = tuple(steps[base + 1:base + RT_STEP_WIDTH])
        if len(_STEP_CACHE) > 20_000:       # about the streams of a few snapshot refreshes
            _STEP_CACHE.clear()
        _STEP_CACHE[id(steps)] = (steps, minute, v)         # holds the list: its id is not reused
        rows.append(i)
        vals.append(v)
    if rows:
        arr = np.asarray(vals, dtype=np.float64)                                    # [rows, 7]
        for c, (m, w) in enumerate(RT_COUNTERS):
            out[f"{m}_{w}"][rows] = arr[:, c]


_STEP_CACHE: dict = {}


def _int_list(v) -> list:
    if isinstance(v, np.ndarray):                 # DuckDB / Arrow lists
        return v.astype(np.int64, copy=False).tolist()
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return []
    return [int(x) for x in v]


def expire_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` whose :data:`SEQUENCE_COLUMNS` are python lists of int.

    A missing value (no row, expired by TTL, or the column absent) reads []; rt_items also reads []
    when its row is as old as its window or older (as_of - rt_epoch >= 30 min, as_of =
    ``event_timestamp``; a missing rt_epoch counts as expired, like the counters in
    :func:`derive_features`). Numeric columns are untouched.
    """
    out = frame.copy()
    n = len(out)
    expired = [True] * n
    if n:
        age = _epoch_seconds(out["event_timestamp"]) - _num(out, "rt_epoch")
        expired = (~(age < RT_WINDOWS[RT_ITEMS_WINDOW])).tolist()            # NaN age -> expired
    gc_on = gc.isenabled()
    gc.disable()            # millions of small acyclic lists: the cyclic GC would dominate the cost
    try:
        for c in SEQUENCE_COLUMNS:
            vals = out[c].tolist() if c in out.columns else [None] * n
            if c == "rt_items":
                lists = [[] if x else _int_list(v) for v, x in zip(vals, expired)]
            else:
                lists = [_int_list(v) for v in vals]
            out[c] = pd.Series(lists, index=out.index, dtype=object)
    finally:
        if gc_on:
            gc.enable()
    return out

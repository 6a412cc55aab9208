"""Real-time counters (and the streams' rt_items) as of an instant, pushed to Feast's online store.

:func:`realtime_frames` runs the very code of the offline log (:func:`statistics.compute_statistics`
for the views ``stream_realtime`` and ``user_recent``) and keeps each entity's state at ``at``:

- the counters are the offline log's at ``at`` (its RT_BUCKET_S grid: the row at ``at``'s minute,
  from the events before that minute), and ``rt_steps`` their schedule for the later minutes
  (:func:`statistics.counter_schedules`), so a reader at any later instant gets the offline log's
  value there (:func:`features.derive_arrays`) — training and serving see the same counters;
- rt_items and the user's lists are exact at ``at`` (the grid aligned on ``at``): an event is in
  them as soon as it is pushed.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from .definitions import (PUSH_SOURCES, PUSH_VIEWS, RT_BUCKET_S, RT_WINDOWS, TIMESTAMP_FIELD, VIEW_FEATURES,
                          view_columns)

log = logging.getLogger(__name__)

# stream events needed before `at`: the longest window, plus the minute the grid may start before it
REALTIME_LOOKBACK = timedelta(seconds=max(RT_WINDOWS.values()) + RT_BUCKET_S)
_LIST_COLUMNS = {v: {n for n, dt in VIEW_FEATURES[v] if dt == "int64_list"} for v in PUSH_VIEWS}
PUSH_BATCH = 1000


def _utc(at: datetime) -> pd.Timestamp:
    t = pd.Timestamp(at)
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).as_unit("us")


def realtime_frames(events: pd.DataFrame, at: datetime, *, stream_ids: Optional[Iterable[int]] = None,
                    user_ids: Optional[Iterable[int]] = None) -> dict[str, pd.DataFrame]:
    """``{"stream_realtime": ..., "user_recent": ...}``: one row per entity, stamped ``at``.

    The counters are the offline log's at ``at``'s minute and ``rt_steps`` their schedule after it
    (module docstring); rt_items covers the events in ``[at - 30 min, at)``, the user's lists the
    events before ``at``.
    stream_ids / user_ids: the entities to emit (zeros / empty lists when they have no events).
    Give them whenever ``events`` is not the complete log of those entities (e.g. a user's history
    plus the last hour of some streams): an entity outside them would be computed from a partial log.
    Default: every entity found in ``events``.
    """
    from .statistics import RT_COUNTER_COLUMNS, compute_statistics, counter_schedules, empty_frame
    at_ts = _utc(at)
    ts = events["ts"]
    ts = ts.dt.tz_convert("UTC") if isinstance(ts.dtype, pd.DatetimeTZDtype) else pd.to_datetime(ts, utc=True)
    ev = events[ts < at_ts]
    t_ev = ts[ts < at_ts]
    recent = ev[t_ev >= at_ts - pd.Timedelta(REALTIME_LOOKBACK)]
    out = {}
    at_epoch = at_ts.value / 1e9
    stamp = pd.Series([at_ts]).astype("datetime64[us, UTC]").iloc[0]
    for view, sub in (("stream_realtime", recent), ("user_recent", ev)):
        key = "stream_id" if view == "stream_realtime" else "user_id"
        wanted = None if (stream_ids if view == "stream_realtime" else user_ids) is None else \
            sorted({int(x) for x in (stream_ids if view == "stream_realtime" else user_ids)})
        if wanted is not None:
            sub = sub[pd.to_numeric(sub[key], errors="coerce").isin(wanted)]
        frames = compute_statistics(sub, None, bucket_s=RT_BUCKET_S, rt_bucket_s=RT_BUCKET_S, end=at_ts.to_pydatetime(),
                                    origin=at_ts.to_pydatetime(), views=[view])
        df = frames[view]
        state = df.groupby(key, sort=True).tail(1).set_index(key) if len(df) else empty_frame(view).set_index(key)
        ids = wanted if wanted is not None else sorted(state.index.astype("int64").tolist())
        state = state.reindex(ids)
        res = pd.DataFrame({key: np.asarray(ids, dtype=np.int64)})
        res[TIMESTAMP_FIELD] = pd.Series([stamp] * len(ids), dtype="datetime64[us, UTC]")
        schedules = counter_schedules(sub, at_ts.to_pydatetime(), stream_ids=ids) if view == "stream_realtime" else {}
        for c in view_columns(view)[2:]:
            if c == "rt_steps":
                res[c] = [schedules[i] for i in ids]
            elif c in RT_COUNTER_COLUMNS:       # the offline log's value at at's minute: the first step
                res[c] = np.asarray([schedules[i][1 + RT_COUNTER_COLUMNS.index(c)] if schedules[i] else 0
                                     for i in ids], dtype=np.int64)
            elif c in _LIST_COLUMNS[view]:
                res[c] = [[int(x) for x in v] if isinstance(v, (list, np.ndarray)) else [] for v in state[c].tolist()]
            elif c == "rt_epoch":
                res[c] = at_epoch
            else:
                res[c] = state[c].fillna(0).to_numpy().astype(np.int64)
        out[view] = res[view_columns(view)]
    return out


# Feast's SQLite online store shares one sqlite3 connection between the threads of a process:
# two pushes at once fail ("cannot start a transaction within a transaction", ~1 in 500 pushes
# on a threads-pool worker). Pushes in one process are serialised; Redis clients are thread-safe.
_PUSH_LOCK = threading.Lock()


def push_frames(settings, frames: dict[str, pd.DataFrame], *, batch_size: int = PUSH_BATCH) -> int:
    """Push rows to the online store (``PushMode.ONLINE``), in batches; returns rows pushed."""
    from feast.data_source import PushMode
    from .store import applied_store
    store = applied_store(settings)
    lock = _PUSH_LOCK if settings.feast_online == "sqlite" else contextlib.nullcontext()
    n = 0
    for view in PUSH_VIEWS:
        df = frames.get(view)
        if df is None or df.empty:
            continue
        for i in range(0, len(df), batch_size):
            part = df.iloc[i:i + batch_size]
            with lock:
                try:
                    store.push(PUSH_SOURCES[view], part, to=PushMode.ONLINE)
                except Exception as exc:
                    if "not found" not in str(exc).lower() and "does not exist" not in str(exc).lower():
                        raise
                    store.refresh_registry()      # applied by another process after our cache was read
                    store.push(PUSH_SOURCES[view], part, to=PushMode.ONLINE)
            n += len(part)
    return n


def push_realtime(settings, events: pd.DataFrame, at: Optional[datetime] = None, *,
                  stream_ids: Optional[Iterable[int]] = None, user_ids: Optional[Iterable[int]] = None) -> int:
    """Compute the real-time rows as of ``at`` (default now) and push them; returns rows pushed.

    Idempotent: the counters are recomputed from ``events``, not incremented.
    """
    at = at or datetime.now(timezone.utc)
    frames = realtime_frames(events, at, stream_ids=stream_ids, user_ids=user_ids)
    n = push_frames(settings, frames)
    log.info("pushed %d real-time rows as of %s", n, _utc(at).isoformat())
    return n


def push_entities(settings, stream_ids: Iterable[int], user_ids: Iterable[int], at: Optional[datetime] = None) -> int:
    """Recompute and push the real-time rows of these streams and users as of ``at`` (default
    now), from the event log: the streams' last hour, the users' most recent events
    (store.ingest.load_recent_user_events — not their whole history). Returns rows pushed."""
    from store.ingest import load_events, load_recent_user_events

    from .definitions import RECENT_N
    from .statistics import ITEM_ACTIONS, STREAM_ACTIONS
    at = at or datetime.now(timezone.utc)
    streams = sorted({int(s) for s in stream_ids})
    users = sorted({int(u) for u in user_ids})
    url = settings.database_url
    until = at + timedelta(microseconds=1)
    parts = []
    if streams:        # impressions feed no real-time counter: most of a stream's hour, left out
        parts.append(load_events(url, start=at - REALTIME_LOOKBACK, end=until, stream_ids=streams,
                                 types=list(STREAM_ACTIONS + ITEM_ACTIONS)))
    if users:
        parts.append(load_recent_user_events(url, users, end=until, stream_types=STREAM_ACTIONS,
                                             item_types=ITEM_ACTIONS, min_distinct=RECENT_N))
    if not parts:
        return 0
    events = pd.concat(parts).drop_duplicates("event_id").sort_values("ts", kind="stable")
    return push_realtime(settings, events, at, stream_ids=streams, user_ids=users)

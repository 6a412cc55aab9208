"""Point-in-time windowed statistics of the event log -> Parquet -> Feast (offline + online).

Definition (one, shared by training and serving):

- Events are cut into buckets ``[k*b, (k+1)*b)`` (b = ``bucket_s``; the real-time log uses
  ``RT_BUCKET_S``). The row of an entity stamped ``T = t*b`` describes the events with ts < T only;
  a window W at T covers the buckets lying fully inside ``[T - W, T)`` (``W // b`` buckets).
- Windowed views also emit a heartbeat row every HEARTBEAT_S (whole buckets) while a window is
  non-zero: their Feast TTL is that long (it bounds the point-in-time join's work).
  user_recent rows are emitted only when a list changes.
- A row is emitted for an entity at T only when one of its values changes there: the entity was
  active in the bucket that just ended, or a bucket it was active in just left a window (that is
  how a counter drops back to 0). Between rows the latest row is exact, so Feast's point-in-time
  join (latest row with event_timestamp <= t) returns the value at t's bucket boundary.
- Rows are computed vectorised: per entity cumulative sums over the bucket index, looked up with
  ``searchsorted``; distinct counts via the union of the intervals each (entity, member) pair is
  inside a window.

Views (see :mod:`feature_repo.definitions` for the columns):
  stream_stats, user_stats, user_category_stats (windows 1d/7d/30d, bucket ``bucket_s``),
  user_stream_stats (cumulative, bucket ``bucket_s``), stream_realtime (5m/30m/1h counters and
  rt_items, the last RT_ITEMS_N distinct items of the stream's item events in the last 30 min;
  bucket ``RT_BUCKET_S``: the offline log of the pushed rows; item events also emit rows, so
  rt_items is exact at every row and a row exists when it empties), user_recent (last 20 distinct
  streams / items before T, bucket ``RT_BUCKET_S``). The rows that go online carry
  ``rt_steps``, the counters' schedule for the later minutes (:func:`counter_schedules`): pushes
  and, from :func:`run_statistics`, each stream's latest row (:func:`with_latest_schedules`), so
  an online reader gets the offline log's counters at any instant, between pushes included.

This module is the aggregation engine's views (feature_repo.windows: its windowed core and
helpers); feature_repo.parquet writes its frames and
materializes them, feature_repo.statistics_job (:func:`~feature_repo.statistics_job.run_statistics`)
is the job.
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import logging
from datetime import datetime
from typing import Optional

import numpy as np
import pandas as pd

from .definitions import (BATCH_VIEWS, PUSH_VIEWS, RECENT_N, RT_BUCKET_S, RT_COUNTERS, RT_ITEMS_N,
                          RT_ITEMS_WINDOW, RT_STEP_WIDTH, RT_WINDOWS, WINDOWS, heartbeat_buckets)
from .windows import (_US, _as_us, _factorize_keys, _finish, _nb, _prepare, _ratio, _t_end, _to_us, _windowed,
                      empty_frame)

log = logging.getLogger(__name__)

STREAM_ACTIONS = ("click", "watch")                  # a "viewer" / "visited stream"
ITEM_ACTIONS = ("item_click", "purchase")
INTERACTIONS = ("click", "watch", "purchase")        # user x stream last interaction


# ============================================================================ the views
def _rate_view(view: str, ev: pd.DataFrame, key_cols: list[str], *, b_us: int, origin_us: int,
               t_end: int, windows: dict, prefix: str, distinct_name: Optional[str],
               distinct_col: Optional[str], with_watches: bool = True) -> pd.DataFrame:
    """stream_stats / user_stats / user_category_stats."""
    if ev.empty:
        return empty_frame(view)
    codes, n_ent, keyvals = _factorize_keys(ev, key_cols)
    k = (ev["us"].to_numpy() - origin_us) // b_us
    typ = ev["type"].to_numpy()
    val = ev["value"].to_numpy()
    is_watch = typ == "watch"
    is_buy = typ == "purchase"
    sums = {"exposures": typ == "impression", "clicks": typ == "click", "watch_s": np.where(is_watch, val, 0.0),
            "purchases": is_buy}
    if with_watches:
        sums.update({"watches": is_watch, "gmv": np.where(is_buy, val, 0.0)})
    distinct = {}
    if distinct_name:
        distinct[distinct_name] = (np.isin(typ, STREAM_ACTIONS), ev[distinct_col].fillna(-1).to_numpy(dtype=np.int64))
    nws = {w: _nb(s, b_us // _US) for w, s in windows.items()}
    e, t, cols = _windowed(codes, k, n_ent, sums=sums, distinct=distinct, maxes={}, windows=nws,
                           t_end=t_end, heartbeat=heartbeat_buckets(b_us // _US))
    feats = {}
    for w in windows:
        feats[f"{prefix}exposures_{w}"] = cols[f"exposures_{w}"]
        feats[f"{prefix}clicks_{w}"] = cols[f"clicks_{w}"]
        feats[f"{prefix}purchases_{w}"] = cols[f"purchases_{w}"]
        feats[f"{prefix}ctr_{w}"] = _ratio(np.rint(cols[f"clicks_{w}"]), np.rint(cols[f"exposures_{w}"]))
        if with_watches:
            watches = np.rint(cols[f"watches_{w}"])
            feats[f"{prefix}watches_{w}"] = watches
            feats[f"{prefix}cvr_{w}"] = _ratio(np.rint(cols[f"purchases_{w}"]), np.rint(cols[f"clicks_{w}"]))
            feats[f"{prefix}stay_mean_{w}"] = _ratio(np.round(cols[f"watch_s_{w}"], 6), watches)
            feats[f"{prefix}gmv_{w}"] = np.round(cols[f"gmv_{w}"], 6)
            feats[f"{prefix}{distinct_name}_{w}"] = cols[f"{distinct_name}_{w}"]
        else:
            feats[f"{prefix}watch_s_{w}"] = np.round(cols[f"watch_s_{w}"], 6)
    keys = {c: keyvals[c][e] for c in key_cols}
    return _finish(view, keys, t * b_us + origin_us, feats)


def _user_stream_view(ev: pd.DataFrame, *, b_us: int, origin_us: int, t_end: int) -> pd.DataFrame:
    view = "user_stream_stats"
    ev = ev[ev["stream_id"].notna() & ev["type"].isin(INTERACTIONS)]
    if ev.empty:
        return empty_frame(view)
    codes, n_ent, keyvals = _factorize_keys(ev, ["user_id", "stream_id"])
    k = (ev["us"].to_numpy() - origin_us) // b_us
    typ = ev["type"].to_numpy()
    val = ev["value"].to_numpy()
    sums = {"clicks": typ == "click", "watches": typ == "watch", "purchases": typ == "purchase",
            "watch_s": np.where(typ == "watch", val, 0.0)}
    inter = ev["us"].to_numpy() / _US
    e, t, cols = _windowed(codes, k, n_ent, sums=sums, distinct={}, maxes={"last": inter},
                           windows={"": None}, t_end=t_end)
    feats = {f"us_{n}": cols[n] for n in ("clicks", "watches", "purchases")}
    feats["us_watch_s"] = np.round(cols["watch_s"], 6)
    feats["us_last_interaction_epoch"] = cols["last"]
    keys = {c: keyvals[c][e] for c in ("user_id", "stream_id")}
    return _finish(view, keys, t * b_us + origin_us, feats)


def _counter_inputs(ev: pd.DataFrame, typ: np.ndarray) -> dict:
    """The real-time counters' definition for :func:`_windowed`: clicks, orders (purchase events)
    and distinct viewers (users with a click or watch) of each stream."""
    return {"sums": {"clicks": typ == "click", "orders": typ == "purchase"},
            "distinct": {"viewers": (np.isin(typ, STREAM_ACTIONS), ev["user_id"].to_numpy())}}


def _realtime_view(ev: pd.DataFrame, *, b_us: int, origin_us: int, t_end: int) -> pd.DataFrame:
    view = "stream_realtime"
    ev = ev[ev["stream_id"].notna() & ev["type"].isin(STREAM_ACTIONS + ITEM_ACTIONS)]
    typ = ev["type"].to_numpy()
    is_item = np.isin(typ, ITEM_ACTIONS) & ev["item_id"].notna().to_numpy()        # rt_items' events
    keep = is_item | (typ != "item_click")               # an item_click without an item: nothing
    if not keep.all():
        ev, typ, is_item = ev[keep], typ[keep], is_item[keep]
    if ev.empty:
        return empty_frame(view)
    codes, uniq = pd.factorize(ev["stream_id"].astype("int64").to_numpy())
    k = (ev["us"].to_numpy() - origin_us) // b_us
    nws = {w: _nb(s, b_us // _US) for w, s in RT_WINDOWS.items()}
    # an item_click feeds no counter (it is neither a click nor an order) but emits a row when it
    # enters or leaves the rt_items window (purchases emit at every window anyway)
    nw_items = nws[RT_ITEMS_WINDOW]
    e, t, cols = _windowed(codes, k, len(uniq), **_counter_inputs(ev, typ), maxes={}, windows=nws, t_end=t_end,
                           marks=(typ == "item_click", [nw_items]))
    t_us = t * b_us + origin_us
    feats = {f"{m}_{w}": cols[f"{m}_{w}"] for m in ("viewers", "clicks", "orders") for w in RT_WINDOWS}
    feats["rt_epoch"] = t_us / _US
    items = ev["item_id"].fillna(-1).to_numpy(dtype=np.int64)
    feats["rt_items"] = _recent_in_window(codes[is_item], k[is_item], ev["us"].to_numpy()[is_item], items[is_item],
                                          e, t, nw_items, RT_ITEMS_N)
    feats["rt_steps"] = [[] for _ in range(len(e))]       # set on the rows that go online (counter_schedules)
    return _finish(view, {"stream_id": uniq[e]}, t_us, feats)


RT_COUNTER_COLUMNS = [f"{m}_{w}" for m, w in RT_COUNTERS]
SCHEDULE_LOOKBACK_S = max(RT_WINDOWS.values()) + RT_BUCKET_S     # events a schedule needs before `at`


def counter_schedules(events: pd.DataFrame, at: datetime,
                      stream_ids: Optional[list] = None) -> dict[int, list[int]]:
    """Each stream's ``rt_steps`` as of ``at``: the real-time counters the offline log holds at
    ``at``'s minute and at every later minute where one changes, if no event arrives after ``at``
    — the offline computation itself (:func:`_realtime_view` on the RT_BUCKET_S grid, run past
    ``at`` until every window has emptied). Flat ``[minute, c_1, ..., c_7]`` per step
    (RT_COUNTERS order, minute = epoch seconds // RT_BUCKET_S, ascending, the first step at
    ``at``'s minute, the last all zeros); ``[]`` when every counter is 0 from ``at`` on.

    events: at least the streams' events in ``[at - SCHEDULE_LOOKBACK_S, at)`` (later ones are
    ignored); stream_ids: the streams to return (default: those in ``events``)."""
    at_us = _to_us(at)
    b_us = RT_BUCKET_S * _US
    ka = at_us // b_us                                       # at's minute
    ev = events[_as_us(events["ts"]) < at_us] if len(events) else events
    ev = ev[_as_us(ev["ts"]) >= at_us - SCHEDULE_LOOKBACK_S * _US] if len(ev) else ev
    horizon = pd.Timestamp((ka + SCHEDULE_LOOKBACK_S // RT_BUCKET_S + 2) * b_us, unit="us", tz="UTC").to_pydatetime()
    out: dict[int, list[int]] = {}
    if len(ev):
        ev = ev[ev["stream_id"].notna() & ev["type"].isin(STREAM_ACTIONS + ("purchase",))]
    if len(ev):
        # the counters of _realtime_view (same inputs, same grid), without its rt_items
        typ = ev["type"].to_numpy()
        codes, uniq = pd.factorize(ev["stream_id"].astype("int64").to_numpy())
        k = _as_us(ev["ts"]) // b_us
        nws = {w: _nb(sec, RT_BUCKET_S) for w, sec in RT_WINDOWS.items()}
        t_end = int(_to_us(horizon) // b_us)
        e, t, cols = _windowed(codes, k, len(uniq), **_counter_inputs(ev, typ), maxes={}, windows=nws, t_end=t_end)
        order = np.lexsort((t, e))                                           # by stream, then time
        minute, sid = t[order], uniq[e[order]].astype(np.int64)
        vals = np.rint(np.column_stack([cols[c][order] for c in RT_COUNTER_COLUMNS])).astype(np.int64)
        bounds = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1], True])
        for a, z in zip(bounds[:-1], bounds[1:]):
            m, v = minute[a:z], vals[a:z]
            upto = int(np.searchsorted(m, ka, side="right"))             # rows at or before at's minute
            first = v[upto - 1] if upto else np.zeros(len(RT_COUNTER_COLUMNS), np.int64)
            steps, prev = [], None
            for mm, vv in [(ka, first)] + list(zip(m[upto:], v[upto:])):
                key = tuple(int(x) for x in vv)
                if key != prev:
                    steps += [int(mm), *key]
                    prev = key
            out[int(sid[a])] = [] if len(steps) == RT_STEP_WIDTH and not any(steps[1:]) else steps
    if stream_ids is not None:
        out = {int(s): out.get(int(s), []) for s in stream_ids}
    return out


def with_latest_schedules(frame: pd.DataFrame, events: pd.DataFrame, end: datetime) -> pd.DataFrame:
    """``frame`` (the stream_realtime log up to ``end``) with ``rt_steps`` set on each stream's
    latest row — the row materialize writes online — to the schedule as of ``end``, so the online
    store follows the drop-offs after ``end`` without a push. Other rows keep []."""
    if frame.empty:
        return frame
    recent = events[_as_us(events["ts"]) >= _to_us(end) - SCHEDULE_LOOKBACK_S * _US] if len(events) else events
    sched = counter_schedules(recent, end)
    if not sched:
        return frame
    out = frame.copy()
    sid = out["stream_id"].to_numpy(dtype=np.int64)
    last = np.flatnonzero(np.r_[sid[1:] != sid[:-1], True])           # rows are ordered by stream, time
    steps = out["rt_steps"].to_numpy().copy()
    for i in last:
        if int(sid[i]) in sched:
            steps[i] = sched[int(sid[i])]
    out["rt_steps"] = steps
    return out


def _recent_in_window(entity: np.ndarray, k: np.ndarray, us: np.ndarray, obj: np.ndarray,
                      e_out: np.ndarray, t_out: np.ndarray, nw: int, n: int) -> list:
    """Per output row (entity ``e_out[i]``, boundary ``t_out[i]``): the distinct ``obj`` of the
    entity's events in buckets ``[t - nw, t)``, most recent first (by last event; ties: the later
    event in input order is the more recent), at most ``n``.

    One lean loop over the events keeps each entity's move-to-front list of its last ``n`` distinct
    objects with the bucket of their last event, saved at the end of every (entity, bucket); a row
    looks up the latest saved list before ``t`` (``searchsorted``) and keeps the entries whose last
    bucket is still inside the window. Buckets never increase along a list, so those entries are a
    prefix, and the window's own list is exactly that prefix (its items are the most recent ones).
    """
    m = len(e_out)
    if m == 0 or len(entity) == 0:
        return [[] for _ in range(m)]
    order = np.lexsort((us, entity))                 # stable: ties keep the input order
    entity, k, obj = entity[order], k[order], obj[order]
    last = np.r_[(entity[1:] != entity[:-1]) | (k[1:] != k[:-1]), True]
    ents, ks, objs, lasts = entity.tolist(), k.tolist(), obj.tolist(), last.tolist()
    states: list = []            # per (entity, bucket with events), in key order: the list
    state_ks: list = []          # ... and the bucket of each entry's last event
    cur = None
    lst: list = []
    lk: list = []
    with _gc_paused():
        for i in range(len(ents)):
            if ents[i] != cur:
                cur, lst, lk = ents[i], [], []
            o = objs[i]
            if o in lst:
                p = lst.index(o)
                del lst[p]
                del lk[p]
            lst.insert(0, o)
            lk.insert(0, ks[i])
            if len(lst) > n:
                lst.pop()
                lk.pop()
            if lasts[i]:
                states.append(lst[:])
                state_ks.append(lk[:])
    # the entries' buckets as a padded [state, n] array (padding: never inside a window)
    lens = np.fromiter(map(len, state_ks), dtype=np.int64, count=len(state_ks))
    s_k = np.full((len(states), n), np.iinfo(np.int64).min, dtype=np.int64)
    offsets = np.cumsum(lens) - lens
    s_k[np.repeat(np.arange(len(states)), lens), np.arange(int(lens.sum())) - np.repeat(offsets, lens)] = \
        np.fromiter(itertools.chain.from_iterable(state_ks), dtype=np.int64, count=int(lens.sum()))
    e_st, k_st = entity[last], k[last]
    base = min(int(k_st.min()), int(t_out.min()) - 1)
    span = max(int(k_st.max()), int(t_out.max())) - base + 1
    g_st = e_st.astype(np.int64) * span + (k_st - base)                 # sorted (entity, bucket)
    idx = np.searchsorted(g_st, e_out.astype(np.int64) * span + (t_out - 1 - base), side="right") - 1
    ok = idx >= 0
    ok[ok] = e_st[idx[ok]] == e_out[ok]
    idx = np.where(ok, idx, 0)
    size = np.where(ok, (s_k[idx] >= (t_out - nw)[:, None]).sum(axis=1), 0)
    with _gc_paused():
        return [states[i][:j] for i, j in zip(idx.tolist(), size.tolist())]


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic GC while building many small acyclic lists: its collections (which walk
    every tracked object of the process) otherwise cost more than the lists themselves."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# the behaviour codes of the user_recent lists (recent_stream_acts / recent_item_acts): the deepest
# action the user took on the entry while it is in the list (0 = padding)
ACT_CODES = {"click": 1, "watch": 2, "item_click": 3, "purchase": 4}


def _recent_view(ev: pd.DataFrame, *, b_us: int, origin_us: int, t_end: int) -> pd.DataFrame:
    """Last RECENT_N distinct streams (click/watch) and items (item_click/purchase) before T.

    A row per (user, bucket with such an event) where a list changed, stamped at the bucket's end.
    The list update is a short loop over the relevant events (each step touches at most RECENT_N
    entries). Aligned with the streams: the epoch seconds of the latest click / watch of each, the
    deepest behaviour on it (:data:`ACT_CODES`; an item click / purchase carrying the stream's id
    deepens an entry already in the list, without moving it) and its total watch seconds; aligned
    with the items: the deepest behaviour (item click or purchase). An entry that leaves the list
    and comes back starts afresh.
    """
    view = "user_recent"
    typ = ev["type"].to_numpy()
    is_s = np.isin(typ, STREAM_ACTIONS) & ev["stream_id"].notna().to_numpy()
    is_i = np.isin(typ, ITEM_ACTIONS) & ev["item_id"].notna().to_numpy()
    sel = is_s | is_i
    if not sel.any():
        return empty_frame(view)
    k = (ev["us"].to_numpy() - origin_us) // b_us
    act = pd.Series(typ).map(ACT_CODES).fillna(0).to_numpy(dtype=np.int64)
    watch_s = np.where(typ == "watch", np.maximum(ev["value"].to_numpy(dtype=np.float64), 0.0), 0.0)
    sid = ev["stream_id"].fillna(-1).to_numpy(dtype=np.int64)[sel]
    sub = pd.DataFrame({"user_id": ev["user_id"].to_numpy()[sel], "k": k[sel], "us": ev["us"].to_numpy()[sel],
                        "is_s": is_s[sel], "act": act[sel], "watch_s": watch_s[sel], "sid": sid,
                        "obj": np.where(is_s[sel], sid, ev["item_id"].fillna(-1).to_numpy(dtype=np.int64)[sel])})
    sub = sub[sub["k"] < t_end]
    sub = sub.sort_values(["user_id", "us"], kind="stable")
    users, ks, flags, objs, uss, acts, secs, sids = (sub[c].tolist() for c in
                                                     ("user_id", "k", "is_s", "obj", "us", "act", "watch_s", "sid"))
    out_u, out_t, out_s, out_i, out_st, out_sa, out_sd, out_ia = [], [], [], [], [], [], [], []
    n = len(users)
    cur_user = None
    last = None
    for i in range(n):
        u = users[i]
        if u != cur_user:
            cur_user, last = u, None
            streams: list = []
            stream_ts: list = []       # aligned with streams: epoch seconds of each one's latest click / watch
            stream_act: list = []      # ... its deepest behaviour (ACT_CODES)
            stream_dwell: list = []    # ... its total watch seconds
            items: list = []
            item_act: list = []        # aligned with items: the deepest behaviour
        o = objs[i]
        if flags[i]:
            a, dwell = acts[i], 0
            if o in streams:
                j = streams.index(o)
                a, dwell = max(a, stream_act[j]), stream_dwell[j]
                for lst in (streams, stream_ts, stream_act, stream_dwell):
                    del lst[j]
            streams.insert(0, o)
            stream_ts.insert(0, uss[i] // 1_000_000)
            stream_act.insert(0, a)
            stream_dwell.insert(0, dwell + int(round(secs[i])))
            if len(streams) > RECENT_N:
                for lst in (streams, stream_ts, stream_act, stream_dwell):
                    lst.pop()
        else:
            a = acts[i]
            if o in items:
                j = items.index(o)
                a = max(a, item_act[j])
                del items[j]
                del item_act[j]
            items.insert(0, o)
            item_act.insert(0, a)
            if len(items) > RECENT_N:
                items.pop()
                item_act.pop()
            if sids[i] in streams:                # an item action in a listed stream deepens it
                j = streams.index(sids[i])
                stream_act[j] = max(stream_act[j], acts[i])
        state = (streams, stream_ts, stream_act, stream_dwell, items, item_act)
        if (i + 1 == n or users[i + 1] != u or ks[i + 1] != ks[i]) and state != last:
            last = tuple(list(x) for x in state)
            out_u.append(u)
            out_t.append(ks[i] + 1)
            for out, x in zip((out_s, out_st, out_sa, out_sd, out_i, out_ia), last):
                out.append(x)
    t_us = np.asarray(out_t, dtype=np.int64) * b_us + origin_us
    return _finish(view, {"user_id": np.asarray(out_u, dtype=np.int64)}, t_us,
                   {"recent_streams": out_s, "recent_items": out_i, "recent_stream_ts": out_st,
                    "recent_stream_acts": out_sa, "recent_stream_dwell": out_sd, "recent_item_acts": out_ia})


def _categories(ev: pd.DataFrame, streams: Optional[pd.DataFrame], items: Optional[pd.DataFrame]) -> pd.Series:
    cat = pd.Series(pd.NA, index=ev.index, dtype="Int64")
    if streams is not None and len(streams):
        m = pd.Series(streams["category"].astype("Int64").to_numpy(), index=streams["stream_id"].astype("int64"))
        m = m[~m.index.duplicated()]
        cat = ev["stream_id"].map(m).astype("Int64")
    if items is not None and len(items) and "item_id" in ev:
        m = pd.Series(items["category"].astype("Int64").to_numpy(), index=items["item_id"].astype("int64"))
        m = m[~m.index.duplicated()]
        no_stream = ev["stream_id"].isna() & ev["item_id"].notna()
        if no_stream.any():
            cat[no_stream] = ev.loc[no_stream, "item_id"].map(m).astype("Int64")
    return cat


def compute_statistics(events: pd.DataFrame, streams: Optional[pd.DataFrame], *, bucket_s: int,
                       end: Optional[datetime] = None, items: Optional[pd.DataFrame] = None,
                       rt_bucket_s: int = RT_BUCKET_S, origin: Optional[datetime] = None,
                       views: Optional[list[str]] = None) -> dict[str, pd.DataFrame]:
    """All feature views' rows from an event frame (EVENT_COLUMNS).

    end: rows up to the last bucket boundary <= end, from events with ts before that boundary
    (default: up to the end of the last event's bucket). streams: catalog (stream_id, category)
    for user_category_stats; items (item_id, category) gives a category to purchases without a
    stream. origin: bucket origin (default the epoch; realtime.py aligns it on the push instant).
    """
    views = list(views) if views is not None else BATCH_VIEWS + PUSH_VIEWS
    ev = _prepare(events)
    origin_us = _to_us(origin) if origin is not None else 0
    end_us = _to_us(end) if end is not None else None
    out: dict[str, pd.DataFrame] = {}

    b_us = int(bucket_s) * _US
    t_end = _t_end(ev["us"].to_numpy(), b_us, end_us, origin_us)
    evb = ev[(ev["us"].to_numpy() - origin_us) // b_us < t_end]
    has_stream = evb["stream_id"].notna()
    if "stream_stats" in views:
        sub = evb[has_stream & evb["type"].isin(("impression", "click", "watch", "purchase"))]
        out["stream_stats"] = _rate_view("stream_stats", sub.assign(stream_id=sub["stream_id"].astype("int64")),
                                         ["stream_id"], b_us=b_us, origin_us=origin_us, t_end=t_end,
                                         windows=WINDOWS, prefix="s_", distinct_name="viewers",
                                         distinct_col="user_id")
    if "user_stats" in views:
        sub = evb[evb["type"].isin(("impression", "click", "watch", "purchase"))]
        out["user_stats"] = _rate_view("user_stats", sub, ["user_id"], b_us=b_us, origin_us=origin_us,
                                       t_end=t_end, windows=WINDOWS, prefix="u_", distinct_name="streams",
                                       distinct_col="stream_id")
    if "user_category_stats" in views:
        sub = evb[evb["type"].isin(("impression", "click", "watch", "purchase"))]
        cat = _categories(sub, streams, items)
        sub = sub.assign(category_id=cat)[cat.notna()]
        sub = sub.assign(category_id=sub["category_id"].astype("int64"))
        out["user_category_stats"] = _rate_view("user_category_stats", sub, ["user_id", "category_id"],
                                                b_us=b_us, origin_us=origin_us, t_end=t_end, windows=WINDOWS,
                                                prefix="uc_", distinct_name=None, distinct_col=None,
                                                with_watches=False)
    if "user_stream_stats" in views:
        out["user_stream_stats"] = _user_stream_view(evb, b_us=b_us, origin_us=origin_us, t_end=t_end)

    r_us = int(rt_bucket_s) * _US
    rt_end = _t_end(ev["us"].to_numpy(), r_us, end_us, origin_us)
    evr = ev[(ev["us"].to_numpy() - origin_us) // r_us < rt_end]
    if "stream_realtime" in views:
        out["stream_realtime"] = _realtime_view(evr, b_us=r_us, origin_us=origin_us, t_end=rt_end)
    if "user_recent" in views:
        out["user_recent"] = _recent_view(evr, b_us=r_us, origin_us=origin_us, t_end=rt_end)
    for view, df in out.items():
        df.attrs["bucket_s"] = int(bucket_s) if view in BATCH_VIEWS else int(rt_bucket_s)
    return out

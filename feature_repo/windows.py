"""The windowed core of :mod:`feature_repo.statistics`: bucket grids, per-entity cumulative sums,
windowed sums and distinct counts with their change rows and heartbeats, and the small time /
key / frame helpers the views share (package-internal: the views are the public API).
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

import numpy as np
import pandas as pd

from .definitions import TIMESTAMP_FIELD, VIEW_FEATURES, arrow_schema, view_columns

_US = 1_000_000

# ============================================================================ the windowed core
class _Grid:
    """Entities x bucket indices packed in one int64 key: ``e * span + (k - base)``."""

    def __init__(self, n_entities: int, kmin: int, kmax: int, max_nw: int):
        self.base = int(kmin)
        self.span = int(kmax - kmin + max_nw + 3)
        if n_entities * self.span >= 2 ** 62:
            raise ValueError("too many entities x buckets for the int64 grid")

    def key(self, e: np.ndarray, j: np.ndarray) -> np.ndarray:
        return e.astype(np.int64) * self.span + (j.astype(np.int64) - self.base)

    def split(self, g: np.ndarray):
        return g // self.span, g % self.span + self.base


def _unique(g: np.ndarray, return_inverse: bool = False):
    """Sorted unique int64 values (sort based: faster than np.unique's hash path here)."""
    order = np.argsort(g, kind="stable")
    gs = g[order]
    flag = np.empty(len(gs), dtype=bool)
    if len(gs):
        flag[0] = True
        np.not_equal(gs[1:], gs[:-1], out=flag[1:])
    uniq = gs[flag]
    if not return_inverse:
        return uniq
    inv = np.empty(len(g), dtype=np.int64)
    inv[order] = np.cumsum(flag) - 1
    return uniq, inv


def _segment_cumsum(entity: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each new entity (``entity`` sorted)."""
    c = np.cumsum(values, axis=0)
    if len(entity) == 0:
        return c
    first = np.r_[True, entity[1:] != entity[:-1]]
    starts = np.flatnonzero(first)
    seg = np.cumsum(first) - 1
    offset = c[starts] - values[starts]
    return c - offset[seg]


class _Cumulative:
    """Per-entity cumulative values over sorted (entity, index) keys; ``at(e, j)`` = value at the
    last key with index <= j (``empty`` when there is none)."""

    def __init__(self, grid: _Grid, g: np.ndarray, values: np.ndarray, empty: float = 0.0):
        self.grid, self.g, self.empty = grid, g, empty
        self.entity = g // grid.span
        self.c = values

    def at(self, e: np.ndarray, j: np.ndarray) -> np.ndarray:
        q = self.grid.key(e, j)
        idx = np.searchsorted(self.g, q, side="right") - 1
        ok = idx >= 0
        ok[ok] = self.entity[idx[ok]] == e[ok]
        out = np.full((len(e),) + self.c.shape[1:], self.empty, dtype=float)
        out[ok] = self.c[idx[ok]]
        return out


def _heartbeats(grid: _Grid, g_out: np.ndarray, every: int) -> np.ndarray:
    """Add emission times so that consecutive rows of an entity are at most ``every`` buckets apart."""
    e, t = grid.split(g_out)
    gap = t[1:] - t[:-1]
    idx = np.flatnonzero((e[1:] == e[:-1]) & (gap > every))
    if len(idx) == 0:
        return g_out
    cnt = (gap[idx] - 1) // every
    j = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
    extra = grid.key(np.repeat(e[idx], cnt), np.repeat(t[idx], cnt) + j * every)
    return np.sort(np.concatenate([g_out, extra]))


def _windowed(entity: np.ndarray, k: np.ndarray, n_entities: int, *, sums: dict, distinct: dict,
              maxes: dict, windows: dict, t_end: int, heartbeat: Optional[int] = None,
              marks: Optional[tuple] = None):
    """Rows of windowed aggregates.

    entity, k: per event, the entity code and bucket index (events with k < t_end only).
    sums: name -> per-event values (added up); distinct: name -> (mask, member ids);
    maxes: name -> per-event values (cumulative max; only with the cumulative window);
    windows: window name -> number of buckets, or None for "cumulative since the beginning".
    heartbeat: also emit a row every ``heartbeat`` buckets between changes (until the final
    all-zero row), so that a TTL of ``heartbeat`` buckets never expires a live value.
    marks: (mask, [number of buckets]): the masked events feed no aggregate here (their caller gives
    them zero weights and masks them out of ``distinct``) and emit rows only when they enter (k+1)
    or leave the listed windows — for a value the caller computes at the returned rows (rt_items).
    Returns (entity codes, boundary indices t, {f"{name}_{window}" or name: values}).
    """
    if len(entity) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), {}
    nws = [nw for nw in windows.values() if nw is not None]
    grid = _Grid(n_entities, k.min(), k.max(), max(nws) if nws else 0)
    g_ev = grid.key(entity, k)
    g_act, inv = _unique(g_ev, return_inverse=True)
    e_act, k_act = grid.split(g_act)

    # emission times: the bucket just ended, or a bucket left a window
    if marks is None:
        cand = [g_act + 1] + [g_act + 1 + nw for nw in nws]
    else:
        g_full = _unique(g_ev[~np.asarray(marks[0], dtype=bool)])
        cand = [g_act + 1] + [g_full + 1 + nw for nw in nws] + [g_act + 1 + int(nw) for nw in marks[1]]
    g_out = _unique(np.concatenate(cand))
    if heartbeat:
        g_out = _heartbeats(grid, g_out, int(heartbeat))
    e_out, t_out = grid.split(g_out)
    keep = t_out <= t_end
    e_out, t_out = e_out[keep], t_out[keep]

    cols: dict[str, np.ndarray] = {}
    if sums:
        names = list(sums)
        v = np.zeros((len(g_act), len(names)))
        for i, n in enumerate(names):
            v[:, i] = np.bincount(inv, weights=np.asarray(sums[n], dtype=float), minlength=len(g_act))
        cum = _Cumulative(grid, g_act, _segment_cumsum(e_act, v))
        s_now = cum.at(e_out, t_out - 1)
        for w, nw in windows.items():
            vals = s_now if nw is None else s_now - cum.at(e_out, t_out - 1 - nw)
            for i, n in enumerate(names):
                cols[f"{n}_{w}" if w else n] = vals[:, i]
    for n, vals in maxes.items():
        m = np.full(len(g_act), -np.inf)
        np.maximum.at(m, inv, np.nan_to_num(np.asarray(vals, dtype=float), nan=-np.inf))
        m = pd.Series(m).groupby(e_act).cummax().to_numpy()
        cum = _Cumulative(grid, g_act, m, empty=-np.inf)
        out = cum.at(e_out, t_out - 1)
        out[np.isinf(out)] = np.nan
        cols[n] = out
    for n, (mask, member) in distinct.items():
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():        # no member event at all (e.g. only purchases / item clicks): 0
            for w in windows:
                cols[f"{n}_{w}" if w else n] = np.zeros(len(e_out))
            continue
        em, km, mm = entity[mask], k[mask], np.asarray(member)[mask].astype(np.int64)
        # distinct (entity, member, bucket), sorted by (entity, member, bucket)
        mcode = pd.factorize(mm)[0].astype(np.int64)
        pair = em.astype(np.int64) * (int(mcode.max()) + 1 if len(mcode) else 1) + mcode
        order = np.lexsort((km, pair))
        em, km, pair = em[order], km[order], pair[order]
        dup = np.r_[False, (pair[1:] == pair[:-1]) & (km[1:] == km[:-1])]
        em, km, pair = em[~dup], km[~dup], pair[~dup]
        same_prev = np.r_[False, pair[1:] == pair[:-1]]
        same_next = np.r_[pair[1:] == pair[:-1], False]
        gap_prev = np.r_[np.iinfo(np.int64).max, km[1:] - km[:-1]]
        gap_next = np.r_[km[1:] - km[:-1], np.iinfo(np.int64).max]
        for w, nw in windows.items():
            if nw is None:        # cumulative distinct: +1 at the first bucket of each pair
                start = ~same_prev
                eg = grid.key(em[start], km[start] + 1)
                dv = np.ones(int(start.sum()))
            else:                 # member inside the window for t in the union of [k+1, k+nw]
                start = ~same_prev | (gap_prev > nw)
                stop = ~same_next | (gap_next > nw)
                eg = np.concatenate([grid.key(em[start], km[start] + 1),
                                     grid.key(em[stop], km[stop] + 1 + nw)])
                dv = np.r_[np.ones(int(start.sum())), -np.ones(int(stop.sum()))]
            gd, dinv = _unique(eg, return_inverse=True)
            dsum = np.bincount(dinv, weights=dv, minlength=len(gd))
            cum = _Cumulative(grid, gd, _segment_cumsum(gd // grid.span, dsum))
            cols[f"{n}_{w}" if w else n] = cum.at(e_out, t_out)
    return e_out, t_out, cols


# ============================================================================ helpers
def _as_us(ts: pd.Series) -> np.ndarray:
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        # already tz-aware datetimes (the loader's): pd.to_datetime would still scan every value
        # to decide on its cache (~3 µs an event)
        t = ts.dt.tz_convert("UTC")
    else:
        t = pd.to_datetime(ts, utc=True)
    return t.astype("datetime64[us, UTC]").astype("int64").to_numpy()


def _to_us(t: datetime) -> int:
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.tz_convert("UTC").value) // 1000          # .value is always ns


def _timestamps(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(us.astype(np.int64), unit="us", utc=True)).astype("datetime64[us, UTC]")


def _factorize_keys(frame: pd.DataFrame, cols: list[str]):
    """Entity codes 0..n-1 of the key columns and, per code, the key values."""
    codes = None
    levels = []
    for c in cols:
        ci, ui = pd.factorize(frame[c].to_numpy(dtype=np.int64))
        levels.append((ci, ui))
        codes = ci.astype(np.int64) if codes is None else codes * len(ui) + ci
    codes = _unique(codes, return_inverse=True)[1] if codes is not None else np.zeros(0, np.int64)
    n = int(codes.max()) + 1 if len(codes) else 0
    keys = {}
    rep = np.zeros(n, dtype=np.int64)
    rep[codes] = np.arange(len(codes))       # one event per entity
    for c, (ci, ui) in zip(cols, levels):
        keys[c] = ui[ci[rep]]
    return codes, n, keys


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(len(num), np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _prepare(events: pd.DataFrame) -> pd.DataFrame:
    ev = events
    out = pd.DataFrame({
        "user_id": ev["user_id"].astype("int64").to_numpy(),
        "us": _as_us(ev["ts"]),
        "type": ev["type"].astype(str).to_numpy(),
        "stream_id": pd.to_numeric(ev["stream_id"], errors="coerce").astype("Int64"),
        "item_id": pd.to_numeric(ev["item_id"], errors="coerce").astype("Int64") if "item_id" in ev else pd.NA,
        "value": pd.to_numeric(ev["value"], errors="coerce").astype(float).fillna(0.0).to_numpy()
        if "value" in ev else 0.0,
    })
    return out


def _finish(view: str, keys: dict, t_us: np.ndarray, feats: dict) -> pd.DataFrame:
    """The view's frame, rows ordered by (entity, event_timestamp)."""
    cols = {k: np.asarray(v, dtype=np.int64) for k, v in keys.items()}
    cols[TIMESTAMP_FIELD] = pd.DatetimeIndex(pd.to_datetime(np.asarray(t_us, dtype=np.int64), unit="us", utc=True)
                                             ).as_unit("us")
    for name, dt in VIEW_FEATURES[view]:
        v = feats[name]
        if dt == "int64":
            cols[name] = np.rint(v).astype(np.int64)
        elif dt == "float64":
            cols[name] = np.asarray(v, dtype=float)
        else:
            cols[name] = pd.Series(v, dtype=object).to_numpy()
    return pd.DataFrame(cols, columns=view_columns(view))


def empty_frame(view: str) -> pd.DataFrame:
    return arrow_schema(view).empty_table().to_pandas().astype({TIMESTAMP_FIELD: "datetime64[us, UTC]"})


def _nb(window_s: int, bucket_s: int) -> int:
    nw = int(window_s) // int(bucket_s)
    if nw < 1:
        raise ValueError(f"bucket of {bucket_s}s is longer than a {window_s}s window")
    return nw


def _t_end(us: np.ndarray, b_us: int, end_us: Optional[int], origin_us: int) -> int:
    if end_us is not None:
        return int((end_us - origin_us) // b_us)
    return int((us.max() - origin_us) // b_us) + 1 if len(us) else 0


__all__ = ["_Cumulative", "_Grid", "_as_us", "_factorize_keys", "_finish", "_heartbeats", "_nb", "_prepare", "_ratio", "_segment_cumsum", "_t_end", "_timestamps", "_to_us", "_unique", "_windowed", "empty_frame"]

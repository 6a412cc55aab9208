"""Validated, idempotent writes to the event log and the catalog.

``ingest_events`` writes a batch in ONE transaction: either every new event is committed or,
when any row is bad, nothing is written and :class:`IngestError` lists every bad row with its
number (0-based position in the input) and the reason. Re-sending an event (same ``event_id``)
is a no-op counted in ``duplicates``.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np
import pandas as pd
from sqlalchemy import and_, func, select

from .db import get_engine, utc_naive, utcnow
from .schema import (EVENT_TYPES, Event, Impression, Item, LiveWindow, PushOutbox, Stream, StreamItem, User)

log = logging.getLogger(__name__)

NEEDS_STREAM = {"impression", "click", "watch"}
NEEDS_ITEM = {"item_click", "purchase"}
NEEDS_VALUE = {"watch", "purchase"}
_CHUNK = 900            # ids per IN (...) query: below SQLite's 999-parameter floor
# Ranges of the integer columns (store/schema.py): ids are BigInteger (int64), ``position`` is
# Integer (int32 on PostgreSQL). A value outside them must be refused at the door: one such row
# accepted once broke every job that reads the log (the loader's Int64 cast raised).
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
VALUE_MAX = 1e12        # seconds watched / amount paid: larger is a client bug, and it overflows sums


class EventField(NamedTuple):
    """One field of an event: how :func:`validate_events` checks it and how the API documents it
    (api/schemas.py builds the OpenAPI ``Event`` schema from :data:`EVENT_FIELDS`)."""
    name: str
    kind: str                       # "str" | "int" | "ts" | "float"
    required: bool
    doc: str
    max_len: int = 0                # "str"
    minimum: float = 0              # "int" / "float"
    maximum: float = INT64_MAX
    above_minimum: bool = False     # "float": the minimum itself is refused (a propensity of 0)


# The one definition of an event's fields (store/schema.py holds the column types they fit).
EVENT_FIELDS: tuple[EventField, ...] = (
    EventField("event_id", "str", True, "the client's id of the event; re-sending it is a no-op", max_len=128),
    EventField("user_id", "int", True, "the user (int64 >= 0)"),
    EventField("ts", "ts", True, "when it happened: ISO-8601 (e.g. 2026-12-01T13:05:00Z; UTC when no offset) "
               "or epoch seconds; 1970 to 2261"),
    EventField("type", "str", True, "one of " + ", ".join(EVENT_TYPES), max_len=16),
    EventField("stream_id", "int", False, "the live stream (required for impression, click, watch)"),
    EventField("item_id", "int", False, "the product (required for item_click, purchase)"),
    EventField("request_id", "str", False, "the /v1/recommend answer this event follows from", max_len=64),
    EventField("position", "int", False, "slot of the stream in that answer, 1 = top", minimum=1, maximum=INT32_MAX),
    EventField("page", "str", False, "where it was shown (e.g. live_tab)", max_len=32),
    EventField("value", "float", False, "seconds watched (watch) or amount paid (purchase)", maximum=VALUE_MAX),
    EventField("propensity", "float", False, "impression: the serving policy's probability of this stream at "
               "this position (1.0 for a deterministic slot; in (0, 1])", maximum=1.0, above_minimum=True),
    EventField("policy", "str", False, "impression: what chose the slot (ranked, explore, randomised, "
               "popularity, ...)", max_len=32),
)
EVENT_COLUMNS = [f.name for f in EVENT_FIELDS]
REQUIRED_COLUMNS = [f.name for f in EVENT_FIELDS if f.required]


class RowError(NamedTuple):
    row: int
    field: str
    reason: str


class IngestError(ValueError):
    """A batch was rejected; nothing was written. ``errors`` lists every bad row."""

    def __init__(self, errors: Sequence[RowError]):
        self.errors = sorted(errors)
        head = "; ".join(f"row {e.row}: {e.field}: {e.reason}" for e in self.errors[:20])
        more = f" (and {len(self.errors) - 20} more)" if len(self.errors) > 20 else ""
        rows = len({e.row for e in self.errors})
        super().__init__(f"{rows} bad row(s), nothing written: {head}{more}")

    def as_dicts(self) -> list[dict]:
        return [e._asdict() for e in self.errors]


@dataclass
class IngestResult:
    received: int
    inserted: int
    duplicates: int
    inserted_event_ids: Optional[list] = None
    outbox_id: Optional[int] = None          # the push_outbox row of the new events (outbox=True)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("inserted_event_ids")
        d.pop("outbox_id")
        return d


# ----------------------------------------------------------------------------- validation
def _int_column(s: pd.Series, name: str, errors: list, *, required: bool, minimum: int = 0,
                maximum: int = INT64_MAX) -> pd.Series:
    """Coerce to nullable Int64, recording a RowError for every value that is not an integer in
    ``[minimum, maximum]`` (the column's range)."""
    out = pd.Series(pd.array([None] * len(s), dtype="Int64"), index=s.index)
    if pd.api.types.is_bool_dtype(s.dtype):
        for i in range(len(s)):
            errors.append(RowError(i, name, "must be an integer, got a boolean"))
        return out
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_unsigned_integer_dtype(s.dtype):
        out = s.astype("Int64")             # (uint64 columns, i.e. values >= 2**63, take the checked path)
    elif pd.api.types.is_float_dtype(s.dtype):
        vals = s.to_numpy(dtype=float)
        ok = np.isnan(vals) | (np.isfinite(vals) & (np.floor(vals) == vals) & (np.abs(vals) < 2**62))
        for i in np.flatnonzero(~ok):
            errors.append(RowError(int(i), name, f"must be an integer, got {vals[i]!r}"))
        clean = np.where(ok, vals, np.nan)
        out = pd.Series(pd.array([None if math.isnan(v) else int(v) for v in clean], dtype="Int64"), index=s.index) \
            if len(clean) < 5000 else pd.Series(clean, index=s.index).astype("Int64")
    else:
        vals = []
        for i, v in enumerate(s.tolist()):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                vals.append(None)
            elif isinstance(v, bool) or isinstance(v, np.bool_):
                errors.append(RowError(i, name, "must be an integer, got a boolean"))
                vals.append(None)
            elif isinstance(v, (int, np.integer)):
                if abs(int(v)) >= 2**63:
                    errors.append(RowError(i, name, "integer out of range"))
                    vals.append(None)
                else:
                    vals.append(int(v))
            elif isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
                vals.append(int(v))
            else:
                errors.append(RowError(i, name, f"must be an integer, got {type(v).__name__} {v!r:.40}"))
                vals.append(None)
        out = pd.Series(pd.array(vals, dtype="Int64"), index=s.index)
    null = out.isna().to_numpy()
    if required:
        bad_rows = {e.row for e in errors if e.field == name}
        for i in np.flatnonzero(null):
            if int(i) not in bad_rows:
                errors.append(RowError(int(i), name, "is required"))
    vals = out.fillna(minimum).to_numpy(dtype=np.int64)
    below = (~null) & (vals < minimum)
    for i in np.flatnonzero(below):
        errors.append(RowError(int(i), name, f"must be >= {minimum}, got {out.iloc[i]}"))
    above = (~null) & (vals > maximum)
    for i in np.flatnonzero(above):
        errors.append(RowError(int(i), name, f"must be <= {maximum}, got {out.iloc[i]}"))
    return out


def text_problem(value: str) -> Optional[str]:
    """Why ``value`` cannot be stored as text (None when it can): a NUL byte (PostgreSQL refuses
    it, SQLite cuts C strings at it) or a lone surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        return "must not contain NUL bytes"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?")
TS_MAX = pd.Timestamp("2262-01-01", tz="UTC")     # pandas' nanosecond range ends 2262-04-11


def _str_column(s: pd.Series, name: str, errors: list, *, required: bool, max_len: int) -> pd.Series:
    vals = []
    for i, v in enumerate(s.tolist()):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            if required:
                errors.append(RowError(i, name, "is required"))
            vals.append(None)
        elif isinstance(v, str) or (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and name != "type"):
            v = str(v)
            if required and not v.strip():
                errors.append(RowError(i, name, "must not be empty"))
            elif len(v) > max_len:
                errors.append(RowError(i, name, f"longer than {max_len} characters"))
            elif (problem := text_problem(v)):
                errors.append(RowError(i, name, problem))
            vals.append(v)
        else:
            errors.append(RowError(i, name, f"must be a string, got {type(v).__name__}"))
            vals.append(None)
    return pd.Series(vals, index=s.index, dtype=object)


def _ts_column(s: pd.Series, errors: list) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ts = s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
        ts = ts.dt.tz_convert("UTC")
        for i in np.flatnonzero(ts.isna().to_numpy()):
            errors.append(RowError(int(i), "ts", "is required"))
        return ts.astype("datetime64[us, UTC]")
    out = []
    for i, v in enumerate(s.tolist()):
        try:
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                raise ValueError("is required")
            if isinstance(v, (bool, np.bool_)):
                raise ValueError("must be an ISO-8601 time or epoch seconds, got a boolean")
            if isinstance(v, (int, float, np.integer, np.floating)):
                if not math.isfinite(v) or not (0 <= v < TS_MAX.timestamp()):
                    raise ValueError(f"epoch seconds out of range: {v!r}")
                t = pd.Timestamp(float(v), unit="s", tz="UTC")
            elif isinstance(v, (str, datetime, pd.Timestamp)):
                if isinstance(v, str) and not _ISO_TIME.fullmatch(v.strip()):
                    # pandas also reads "now", "today", "20261201": an event's time must be explicit
                    raise ValueError(f"must be an ISO-8601 time (e.g. 2026-12-01T13:05:00Z) or epoch seconds, "
                                     f"got {v!r:.40}")
                t = pd.Timestamp(v)
                if pd.isna(t):
                    raise ValueError("is required")
                t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
                if not (1970 <= t.year and t < TS_MAX):
                    raise ValueError(f"year out of range (1970 to 2261): {v!r:.40}")
            else:
                raise ValueError(f"must be an ISO-8601 time or epoch seconds, got {type(v).__name__}")
            out.append(t)
        except (ValueError, TypeError, OverflowError) as exc:
            msg = str(exc)
            if "is required" not in msg and not msg.startswith(("must", "epoch", "year")):   # pandas' own
                msg = f"not a valid time: {v!r:.40}"
            errors.append(RowError(i, "ts", msg))
            out.append(pd.NaT)
    return pd.Series(pd.to_datetime(out, utc=True), index=s.index).astype("datetime64[us, UTC]")


def _float_column(s: pd.Series, name: str, errors: list, *, maximum: float = VALUE_MAX,
                  above_zero: bool = False) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        for i in range(len(s)):
            errors.append(RowError(i, name, "must be a number, got a boolean"))
        return pd.Series(np.nan, index=s.index)
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype=float)
    else:
        vals = np.full(len(s), np.nan)
        for i, v in enumerate(s.tolist()):
            if v is None or v is pd.NA:
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                errors.append(RowError(i, name, f"must be a number, got {type(v).__name__}"))
                continue
            vals[i] = float(v)
    bad = np.isinf(vals) | ((vals <= 0) if above_zero else (vals < 0)) | (vals > maximum)
    for i in np.flatnonzero(bad):
        errors.append(RowError(int(i), name, f"must be a finite number in {'(' if above_zero else '['}0, "
                                             f"{maximum:g}], got {vals[i]!r}"))
    return pd.Series(vals, index=s.index)


def validate_events(rows: Union[pd.DataFrame, Sequence[dict]]) -> tuple[pd.DataFrame, list[RowError]]:
    """Normalise a batch to EVENT_COLUMNS with proper dtypes; return (frame, errors).

    Catalog references (stream_id / item_id known) are checked by :func:`ingest_events`,
    which has the database at hand.
    """
    errors: list[RowError] = []
    if isinstance(rows, pd.DataFrame):
        df = rows.reset_index(drop=True)
    else:
        rows = list(rows)
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                errors.append(RowError(i, "*", f"an event must be an object, got {type(r).__name__}"))
                continue
            for key in r:
                if key not in EVENT_COLUMNS:
                    errors.append(RowError(i, str(key)[:40], f"unknown field (allowed: {', '.join(EVENT_COLUMNS)})"))
        df = pd.DataFrame([r if isinstance(r, dict) else {} for r in rows])
    n = len(df)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing and n:
        if isinstance(rows, pd.DataFrame):
            raise IngestError([RowError(0, c, "column is missing") for c in missing])
    for c in EVENT_COLUMNS:
        if c not in df.columns:
            df[c] = None
    out = pd.DataFrame(index=df.index)
    for f in EVENT_FIELDS:
        if f.kind == "str":
            out[f.name] = _str_column(df[f.name], f.name, errors, required=f.required, max_len=f.max_len)
        elif f.kind == "int":
            out[f.name] = _int_column(df[f.name], f.name, errors, required=f.required, minimum=int(f.minimum),
                                      maximum=int(f.maximum))
        elif f.kind == "ts":
            out[f.name] = _ts_column(df[f.name], errors)
        else:
            out[f.name] = _float_column(df[f.name], f.name, errors, maximum=f.maximum, above_zero=f.above_minimum)

    typ = out["type"]
    known = typ.isin(EVENT_TYPES) | typ.isna()
    for i in np.flatnonzero(~known.to_numpy()):
        errors.append(RowError(int(i), "type", f"unknown event type {typ.iloc[i]!r:.40}; one of {', '.join(EVENT_TYPES)}"))
    bad_fields = {(e.row, e.field) for e in errors}
    for i, (t, sid, iid, val) in enumerate(zip(typ.tolist(), out["stream_id"].isna().tolist(),
                                                out["item_id"].isna().tolist(), out["value"].isna().tolist())):
        if t in NEEDS_STREAM and sid and (i, "stream_id") not in bad_fields:
            errors.append(RowError(i, "stream_id", f"is required for {t} events"))
        if t in NEEDS_ITEM and iid and (i, "item_id") not in bad_fields:
            errors.append(RowError(i, "item_id", f"is required for {t} events"))
        if t in NEEDS_VALUE and val and (i, "value") not in bad_fields:
            errors.append(RowError(i, "value", f"is required for {t} events ({'seconds watched' if t == 'watch' else 'amount paid'})"))
    return out[EVENT_COLUMNS], errors


# ----------------------------------------------------------------------------- writes
def _dialect_insert(engine, table):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _existing(conn, column, values: Sequence) -> set:
    found: set = set()
    for part in _chunks(list(values)):
        found.update(conn.execute(select(column).where(column.in_(part))).scalars())
    return found


def _none_if_na(v):
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v


def ingest_events(database_url: str, rows: Union[pd.DataFrame, Sequence[dict]], *,
                  model_version: Optional[str] = None, progress: bool = False,
                  return_ids: bool = False, outbox: bool = False) -> IngestResult:
    """Validate and write a batch of events in one transaction (see module docstring).
    ``outbox``: also record the new events' real-time push in ``push_outbox``, in the same
    transaction (store.outbox); its id is ``IngestResult.outbox_id``."""
    t0 = time.perf_counter()
    df, errors = validate_events(rows)
    received = len(df)
    if received == 0 and not errors:
        return IngestResult(0, 0, 0, [] if return_ids else None)
    engine = get_engine(database_url)
    with engine.begin() as conn:
        # catalog references, checked before anything is written
        for col, model_col, label in (("stream_id", Stream.stream_id, "stream"), ("item_id", Item.item_id, "item")):
            ids = df[col].dropna().astype("int64").unique().tolist()
            known = _existing(conn, model_col, ids) if ids else set()
            unknown = set(ids) - known
            if unknown:
                vals = df[col].to_numpy(dtype=object)
                for i in np.flatnonzero(pd.Series(vals).isin(unknown).to_numpy()):
                    errors.append(RowError(int(i), col, f"unknown {label} {vals[i]} (not in the catalog)"))
        if errors:
            raise IngestError(errors)

        # duplicates: within the batch (first wins) and against the log
        first = ~df["event_id"].duplicated(keep="first")
        fresh = df[first]
        existing = _existing(conn, Event.event_id, fresh["event_id"].tolist())
        fresh = fresh[~fresh["event_id"].isin(existing)]
        duplicates = received - len(fresh)
        outbox_id = None
        if len(fresh):
            ts_naive = fresh["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
            records = []
            for rec, ts in zip(fresh.drop(columns=["ts"]).to_dict("records"), ts_naive.astype(object)):
                rec = {k: _none_if_na(v) for k, v in rec.items()}
                rec["ts"] = ts
                for k in ("user_id", "stream_id", "item_id", "position"):
                    if rec[k] is not None:
                        rec[k] = int(rec[k])
                records.append(rec)
            _write_new(conn, engine, records, model_version, progress=progress)
            if outbox:
                res = conn.execute(PushOutbox.__table__.insert().values(
                    created_at=utcnow(), sent_at=utcnow(), event_ids=[r["event_id"] for r in records]))
                outbox_id = int(res.inserted_primary_key[0])
    dt = time.perf_counter() - t0
    log.info("ingested %d events (%d new, %d duplicates) in %.2fs", received, len(fresh), duplicates, dt)
    ids = fresh["event_id"].tolist() if return_ids else None
    return IngestResult(received, len(fresh), duplicates, ids, outbox_id)


def _write_new(conn, engine, records: list, model_version: Optional[str], *, progress: bool = False) -> None:
    """Insert new event records (EVENT_COLUMNS, naive-UTC ts), their users, and the typed
    projection of the impressions, in chunks, inside the caller's transaction."""
    users = [{"user_id": u} for u in sorted({r["user_id"] for r in records})]
    stmt = _dialect_insert(engine, User.__table__).on_conflict_do_nothing(index_elements=["user_id"])
    for part in _chunks(users, 20000):
        conn.execute(stmt, list(part))
    ev_stmt = _dialect_insert(engine, Event.__table__).on_conflict_do_nothing(index_elements=["event_id"])
    imp_stmt = _dialect_insert(engine, Impression.__table__).on_conflict_do_nothing(index_elements=["event_id"])
    bar = None
    if progress and len(records) > 50000:
        from tqdm import tqdm
        bar = tqdm(total=len(records), unit="ev", desc="ingest")
    for part in _chunks(records, 20000):
        conn.execute(ev_stmt, list(part))
        imps = [{"event_id": r["event_id"], "request_id": r["request_id"], "user_id": r["user_id"],
                 "stream_id": r["stream_id"], "position": r["position"], "page": r["page"], "ts": r["ts"],
                 "model_version": model_version, "propensity": r.get("propensity"), "policy": r.get("policy")}
                for r in part if r["type"] == "impression"]
        if imps:
            conn.execute(imp_stmt, imps)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()


def ingest_impressions(database_url: str, rows: Sequence[dict], *, model_version: Optional[str] = None) -> int:
    """The impression journal's writer (api.journal): impressions the API itself built for its
    answers (known users' ints, catalog streams checked at request time, positions 1..k, ISO
    times), written in one transaction without the pandas validation of :func:`ingest_events`
    (~15 ms a batch, paid 5 times a second per API process). Idempotent on ``event_id``. A
    stream no longer in the catalog drops its rows (logged). Returns rows newly inserted."""
    if not rows:
        return 0
    engine = get_engine(database_url)
    recs = []
    for r in rows:
        ts = datetime.fromisoformat(str(r["ts"]).replace("Z", "+00:00"))
        recs.append({"event_id": str(r["event_id"]), "user_id": int(r["user_id"]), "ts": utc_naive(ts),
                     "type": "impression", "stream_id": int(r["stream_id"]), "item_id": None,
                     "request_id": r.get("request_id"), "position": int(r["position"]), "page": r.get("page"),
                     "value": None, "propensity": r.get("propensity"), "policy": r.get("policy")})
    with engine.begin() as conn:
        streams = {rec["stream_id"] for rec in recs}
        known = _existing(conn, Stream.stream_id, sorted(streams))
        if known != streams:
            gone = sorted(streams - known)
            log.error("impressions of stream(s) %s dropped: no longer in the catalog", gone[:20])
            recs = [rec for rec in recs if rec["stream_id"] in known]
            if not recs:
                return 0
        existing = _existing(conn, Event.event_id, [rec["event_id"] for rec in recs])
        recs = [rec for rec in recs if rec["event_id"] not in existing]
        if recs:
            _write_new(conn, engine, recs, model_version)
    return len(recs)


_CATALOG = {
    "users": (User, ["user_id"], ["user_id", "attributes"]),
    "items": (Item, ["item_id"], ["item_id", "category", "price"]),
    "streams": (Stream, ["stream_id"], ["stream_id", "streamer_id", "category", "created_at"]),
    "stream_items": (StreamItem, ["stream_id", "item_id"], ["stream_id", "item_id", "is_core"]),
    "live_windows": (LiveWindow, ["stream_id", "start_ts"], ["stream_id", "start_ts", "end_ts"]),
}


def _catalog_records(name: str, frame: pd.DataFrame) -> list[dict]:
    model, keys, cols = _CATALOG[name]
    missing = [c for c in keys if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}")
    frame = frame[[c for c in cols if c in frame.columns]].copy()
    for c in frame.columns:
        if c.endswith("_ts") or c == "created_at":
            t = pd.to_datetime(frame[c], utc=True)
            frame[c] = [None if pd.isna(x) else x.to_pydatetime() for x in t.dt.tz_localize(None)]
    recs = []
    for r in frame.to_dict("records"):
        r = {k: _none_if_na(v) for k, v in r.items()}
        for k, v in r.items():
            if isinstance(v, np.integer):
                r[k] = int(v)
            elif isinstance(v, np.floating):
                r[k] = float(v)
            elif isinstance(v, np.bool_):
                r[k] = bool(v)
            elif isinstance(v, pd.Timestamp):
                r[k] = v.to_pydatetime()
        recs.append(r)
    if name == "live_windows":
        bad = [i for i, r in enumerate(recs) if r["start_ts"] is None or r["end_ts"] is None or r["end_ts"] <= r["start_ts"]]
        if bad:
            raise ValueError(f"live_windows: rows {bad[:10]} need start_ts < end_ts")
    return recs


def upsert_catalog(database_url: str, *, users=None, items=None, streams=None, stream_items=None,
                   live_windows=None) -> dict:
    """Insert or update catalog rows (by primary key) in one transaction; returns rows per table."""
    engine = get_engine(database_url)
    given = {"users": users, "items": items, "streams": streams, "stream_items": stream_items,
             "live_windows": live_windows}
    counts = {}
    with engine.begin() as conn:
        for name in ("users", "items", "streams", "stream_items", "live_windows"):
            frame = given[name]
            if frame is None or len(frame) == 0:
                continue
            model, keys, cols = _CATALOG[name]
            recs = _catalog_records(name, frame)
            update_cols = [c for c in recs[0] if c not in keys]
            stmt = _dialect_insert(engine, model.__table__)
            if update_cols:
                stmt = stmt.on_conflict_do_update(index_elements=keys,
                                                  set_={c: getattr(stmt.excluded, c) for c in update_cols})
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=keys)
            for part in _chunks(recs, 20000):
                conn.execute(stmt, list(part))
            counts[name] = len(recs)
    return counts


# ----------------------------------------------------------------------------- reads
def _utc_series(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype="datetime64[us]"), utc=True).astype("datetime64[us, UTC]")


def load_events(database_url: str, *, start: Optional[datetime] = None, end: Optional[datetime] = None,
                types: Optional[Sequence[str]] = None, event_ids: Optional[Sequence[str]] = None,
                user_ids: Optional[Sequence[int]] = None, stream_ids: Optional[Sequence[int]] = None
                ) -> pd.DataFrame:
    """Events with ``start <= ts < end`` (and the given ids) as a frame in EVENT_COLUMNS.

    ``ts`` is datetime64[us, UTC]; rows are ordered by (ts, insertion order).
    """
    engine = get_engine(database_url)
    q = select(*[getattr(Event, c) for c in EVENT_COLUMNS])
    if start is not None:
        q = q.where(Event.ts >= utc_naive(start))
    if end is not None:
        q = q.where(Event.ts < utc_naive(end))
    if types:
        q = q.where(Event.type.in_(list(types)))
    filters = [(Event.event_id, event_ids), (Event.user_id, user_ids), (Event.stream_id, stream_ids)]
    rows = []
    with engine.connect() as conn:
        chunked = [(col, [int(v) if col is not Event.event_id else str(v) for v in vals])
                   for col, vals in filters if vals is not None]
        if not chunked:
            rows = conn.execute(q.order_by(Event.ts, Event.id)).all()
        else:
            # one IN list is chunked (SQLite parameter limit); the others are applied whole
            (col, vals), rest = chunked[0], chunked[1:]
            for col2, vals2 in rest:
                q = q.where(col2.in_(vals2))
            for part in _chunks(vals):
                rows.extend(conn.execute(q.where(col.in_(list(part)))).all())
            rows.sort(key=lambda r: r[2])
    return _events_frame(rows)


def load_recent_user_events(database_url: str, user_ids: Sequence[int], *, end: datetime,
                            stream_types: Sequence[str], item_types: Sequence[str], min_distinct: int,
                            page: int = 200) -> pd.DataFrame:
    """Each user's most recent events before ``end`` of ``stream_types`` / ``item_types``, enough
    of them to hold ``min_distinct`` distinct streams AND items (or all of the user's): what the
    user's "last N distinct" lists need, instead of the user's whole history (a push that
    reloaded every touched user's full history took ~1.4 s). Rows ordered by (ts, insertion)."""
    engine = get_engine(database_url)
    types = list(dict.fromkeys(list(stream_types) + list(item_types)))
    cols = [getattr(Event, c) for c in EVENT_COLUMNS]
    todo = sorted({int(x) for x in user_ids})
    out = []
    limit = page
    with engine.connect() as conn:
        while todo:
            # each user's newest `limit` events in one query (a window function; SQLite and PostgreSQL)
            rn = func.row_number().over(partition_by=Event.user_id,
                                        order_by=(Event.ts.desc(), Event.id.desc())).label("rn")
            got: dict = {u: [] for u in todo}
            for part in _chunks(todo):
                sub = (select(*cols, Event.id.label("eid"), rn)
                       .where(Event.user_id.in_(list(part)), Event.ts < utc_naive(end), Event.type.in_(types))
                       .subquery())
                for r in conn.execute(select(sub).where(sub.c.rn <= limit)).all():
                    got[int(r[1])].append(tuple(r[:-1]))
            again = []
            for u, rows in got.items():
                streams = {r[4] for r in rows if r[3] in stream_types and r[4] is not None}
                items = {r[5] for r in rows if r[3] in item_types and r[5] is not None}
                if len(rows) < limit or (len(streams) >= min_distinct and len(items) >= min_distinct):
                    out.extend(rows)
                else:
                    again.append(u)            # not enough distinct yet: a deeper look for this user
            todo, limit = again, limit * 4
    out.sort(key=lambda r: (r[2], r[-1]))
    return _events_frame([r[:-1] for r in out])


_LOAD_RANGES = {"user_id": (0, INT64_MAX), "stream_id": (0, INT64_MAX), "item_id": (0, INT64_MAX),
                "position": (1, INT32_MAX)}


def _checked_ints(values: list, lo: int, hi: int) -> tuple[pd.Series, int]:
    """Python values from the database -> nullable Int64; anything that is not an integer in
    [lo, hi] becomes <NA> (counted). Built from Python ints, never through float64, so an id near
    2**63 keeps every digit and a stray REAL or text value cannot make the cast raise."""
    try:                                      # the common case, in C: ints and None only, in range
        if all(v is None or type(v) is int for v in values):
            arr = pd.array(values, dtype="Int64")
            ok = arr[~arr.isna()]
            if len(ok) == 0 or (int(ok.min()) >= lo and int(ok.max()) <= hi):      # Int64 min/max: exact
                return pd.Series(arr), 0
    except (TypeError, ValueError, OverflowError):
        pass
    out, bad = [], 0
    for v in values:
        if v is None:
            out.append(None)
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
            out.append(v)
        else:
            out.append(None)
            bad += 1
    return pd.Series(pd.array(out, dtype="Int64")), bad


def _checked_times(values: list) -> pd.Series:
    """Naive-UTC datetimes from the database -> datetime64[us, UTC] (microseconds, not pandas'
    default nanoseconds: no year limit at 2262); an unreadable value becomes NaT."""
    if not values:
        return pd.Series([], dtype="datetime64[us, UTC]")
    try:
        return _utc_series(values)
    except (TypeError, ValueError, OverflowError):
        pass
    out = []
    for v in values:
        try:
            out.append(np.datetime64(v, "us") if isinstance(v, datetime) else np.datetime64("NaT"))
        except (TypeError, ValueError, OverflowError):
            out.append(np.datetime64("NaT"))
    return _utc_series(out)


def _events_frame(rows: list) -> pd.DataFrame:
    """Rows of the event log -> the frame every job reads. Robust to any row already in the log
    (written before a validation existed, or by hand): a value outside its column's range is
    dropped to <NA> with a warning, an event without a usable user or time is left out."""
    cols = list(zip(*rows)) if rows else [[] for _ in EVENT_COLUMNS]
    df = pd.DataFrame({c: pd.Series(list(v), dtype=object) for c, v in zip(EVENT_COLUMNS, cols)})
    bad = {}
    for c, (lo, hi) in _LOAD_RANGES.items():
        df[c], bad[c] = _checked_ints(df[c].tolist(), lo, hi)
    df["ts"] = _checked_times(df["ts"].tolist())
    value = pd.to_numeric(df["value"], errors="coerce").astype(float)
    bad_value = ~(value.isna() | (np.isfinite(value) & (value >= 0) & (value <= VALUE_MAX)))
    bad["value"] = int(bad_value.sum())
    df["value"] = value.mask(bad_value)
    prop = pd.to_numeric(df["propensity"], errors="coerce").astype(float)
    bad_prop = ~(prop.isna() | ((prop > 0) & (prop <= 1)))
    bad["propensity"] = int(bad_prop.sum())
    df["propensity"] = prop.mask(bad_prop)
    keep = df["user_id"].notna() & df["ts"].notna()
    if not keep.all():
        bad["dropped_rows"] = int((~keep).sum())
        df = df[keep.to_numpy()].reset_index(drop=True)
    df["user_id"] = df["user_id"].astype("int64")
    for c in ("event_id", "type", "request_id", "page", "policy"):
        df[c] = df[c].astype(object)
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        log.warning("load_events: values outside their column's range were ignored: %s", bad)
    return df[EVENT_COLUMNS]


def load_catalog(database_url: str) -> dict[str, pd.DataFrame]:
    engine = get_engine(database_url)
    out = {}
    with engine.connect() as conn:
        for name, (model, _keys, cols) in _CATALOG.items():
            rows = conn.execute(select(*[getattr(model, c) for c in cols])).all()
            df = pd.DataFrame(rows, columns=cols)
            for c in cols:
                if c.endswith("_ts") or c == "created_at":
                    df[c] = _utc_series(df[c].tolist()) if len(df) else pd.Series([], dtype="datetime64[us, UTC]")
            out[name] = df
    return out


def live_stream_ids(database_url: str, at: datetime) -> list[int]:
    """Streams with a live window covering ``at``."""
    at = utc_naive(at)
    engine = get_engine(database_url)
    with engine.connect() as conn:
        q = (select(LiveWindow.stream_id).where(and_(LiveWindow.start_ts <= at, LiveWindow.end_ts > at))
             .distinct().order_by(LiveWindow.stream_id))
        return [int(x) for x in conn.execute(q).scalars()]


def live_windows_marker(database_url: str, at: datetime) -> tuple:
    """``(count, max id, next start after at, next end after at)`` of the live windows: while it is
    unchanged and ``at`` has not reached either time, :func:`live_stream_ids` would answer the same
    (except for an end_ts changed in place, which the caller re-reads on a timer). Four indexed
    aggregates: cheap next to reading 100k live ids."""
    at = utc_naive(at)
    with get_engine(database_url).connect() as conn:
        count, top = conn.execute(select(func.count(), func.max(LiveWindow.id))).one()
        nxt_start = conn.execute(select(func.min(LiveWindow.start_ts)).where(LiveWindow.start_ts > at)).scalar()
        nxt_end = conn.execute(select(func.min(LiveWindow.end_ts)).where(LiveWindow.end_ts > at)).scalar()
    return int(count or 0), top, nxt_start, nxt_end


def known_stream_ids(database_url: str, ids: Sequence[int]) -> set:
    engine = get_engine(database_url)
    with engine.connect() as conn:
        return {int(x) for x in _existing(conn, Stream.stream_id, list(ids))}


def data_version(database_url: str) -> str:
    """A short fingerprint that changes whenever events or the catalog change."""
    engine = get_engine(database_url)
    parts = []
    with engine.connect() as conn:
        parts.append(conn.execute(select(func.count(), func.max(Event.id), func.max(Event.ts))).one())
        for model in (Stream, Item, StreamItem, LiveWindow, User):
            parts.append(conn.execute(select(func.count()).select_from(model)).scalar())
        parts.append(conn.execute(select(func.max(LiveWindow.end_ts))).scalar())
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def training_key(database_url: str, end: Optional[datetime] = None) -> str:
    """The input version of a job that reads the events before ``end``: :func:`data_version`,
    plus ``@end`` only when ``end`` cuts the log (some event is at or after it). Beat (no end)
    and ``streamrank pipeline`` (end = now) on the same log thus name the same job, which then
    runs once (store.jobs)."""
    dv = data_version(database_url)
    if end is None:
        return dv
    engine = get_engine(database_url)
    with engine.connect() as conn:
        last = conn.execute(select(func.max(Event.ts))).scalar()
    if last is None or last < utc_naive(end):
        return dv
    return f"{dv}@{end.isoformat()}"

"""Data sources: loaders that map each source onto the event / catalog contract.

Every loader returns a :class:`SourceData`: catalog frames with the columns of the
``store.schema`` tables and an event frame in ``store.ingest.EVENT_COLUMNS`` order
(``ts`` is ``datetime64[us, UTC]``; ``user_id`` int64; ``stream_id``, ``item_id`` and
``position`` nullable ``Int64``). :func:`ingest_source` writes one into the database.

Loaders (import the module you need; nothing heavy is imported here):

* ``store.sources.simulator.simulate(SimConfig(...))`` — built-in live-commerce world with
  planted ground truth (``truth``: per impression p_click, p_purchase, mean_stay_s, ...).
* ``store.sources.twitch.load_twitch(path)`` — the real Twitch watches file.
* ``store.sources.obd.load_obd(folder)`` — Open Bandit Dataset logs (positions + clicks).
* ``store.sources.events_file.load_events_file(path, catalog_dir=None)`` — our contract as
  CSV / Parquet.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

EVENT_COLUMNS = ["event_id", "user_id", "ts", "type", "stream_id", "item_id", "request_id",
                 "position", "page", "value", "propensity", "policy"]      # == store.ingest.EVENT_COLUMNS (kept import-free)

CATALOG_COLUMNS = {
    "users": ["user_id", "attributes"],
    "items": ["item_id", "category", "price"],
    "streams": ["stream_id", "streamer_id", "category", "created_at"],
    "stream_items": ["stream_id", "item_id", "is_core"],
    "live_windows": ["stream_id", "start_ts", "end_ts"],
}
CATALOG_TABLES = tuple(CATALOG_COLUMNS)
TRUTH_FILE = "simulator_truth.parquet"
TS_DTYPE = "datetime64[us, UTC]"


@dataclass
class SourceData:
    """One source mapped onto the contract (see module docstring)."""
    name: str
    users: pd.DataFrame
    items: pd.DataFrame
    streams: pd.DataFrame
    stream_items: pd.DataFrame
    live_windows: pd.DataFrame
    events: pd.DataFrame
    truth: Optional[pd.DataFrame] = None
    meta: dict = field(default_factory=dict)   # source-specific extras (e.g. OBD propensities)

    def catalog(self) -> dict:
        return {name: getattr(self, name) for name in CATALOG_TABLES}

    def summary(self) -> dict:
        out = {name: int(len(getattr(self, name))) for name in CATALOG_TABLES}
        out["events"] = int(len(self.events))
        out["event_types"] = {str(k): int(v) for k, v in self.events["type"].value_counts().sort_index().items()}
        return out


# ----------------------------------------------------------------------------- frame helpers
def to_utc_us(values) -> pd.Series:
    """Anything pandas can parse as time → ``datetime64[us, UTC]`` (naive values are UTC)."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if len(s) == 0:
        return pd.Series([], dtype=TS_DTYPE, index=s.index)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dt, "tz", None) is None:
            s = s.dt.tz_localize("UTC")
        return s.dt.tz_convert("UTC").astype(TS_DTYPE)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return pd.to_datetime(s.astype(float), unit="s", utc=True).astype(TS_DTYPE)
    return pd.to_datetime(s, utc=True, format="mixed").astype(TS_DTYPE)


def empty_frame(table: str) -> pd.DataFrame:
    """An empty catalog frame with the table's columns and dtypes."""
    return normalize_catalog(table, pd.DataFrame({c: [] for c in CATALOG_COLUMNS[table]}))


def normalize_catalog(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Select the table's columns (adding missing optional ones) and coerce dtypes."""
    cols = CATALOG_COLUMNS[table]
    df = df.copy()
    if table == "users" and "attributes" not in df.columns:
        df["attributes"] = None
    if table == "items":
        df["category"] = df["category"] if "category" in df.columns else 0
        df["price"] = df["price"] if "price" in df.columns else 0.0
    if table == "streams":
        if "streamer_id" not in df.columns:
            df["streamer_id"] = df["stream_id"] if "stream_id" in df.columns else []
        df["category"] = df["category"] if "category" in df.columns else 0
        if "created_at" not in df.columns:
            df["created_at"] = pd.NaT
    if table == "stream_items" and "is_core" not in df.columns:
        df["is_core"] = False
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {', '.join(missing)}")
    df = df[cols].reset_index(drop=True)
    for c in cols:
        if c in ("attributes",):
            df[c] = [_attributes(v) for v in df[c].tolist()]
        elif c.endswith("_ts") or c == "created_at":
            df[c] = to_utc_us(df[c])
        elif c == "price":
            df[c] = pd.to_numeric(df[c]).astype(float)
        elif c == "is_core":
            df[c] = df[c].astype(bool)
        else:
            df[c] = pd.to_numeric(df[c]).astype("int64")
    return df


def _attributes(v):
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return None
        try:
            return json.loads(v)
        except ValueError:
            raise ValueError(f"users.attributes must be JSON, got {v[:40]!r}") from None
    return v


def normalize_events(df: pd.DataFrame) -> pd.DataFrame:
    """Events in EVENT_COLUMNS order with the contract dtypes (missing optional columns → null)."""
    df = df.copy()
    for c in EVENT_COLUMNS:
        if c not in df.columns:
            df[c] = None
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    df = df.reset_index(drop=True)
    for c in ("event_id", "user_id", "ts", "type"):
        bad = np.flatnonzero(df[c].isna().to_numpy())
        if len(bad):
            raise ValueError(f"column {c}: empty in row(s) {bad[:10].tolist()}")
    out["event_id"] = df["event_id"].astype(str)
    out["user_id"] = _numeric(df["user_id"], "user_id", integer=True).astype("int64")
    try:
        out["ts"] = to_utc_us(df["ts"])
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"column ts: {exc}") from None
    out["type"] = df["type"].astype(str)
    for c in ("stream_id", "item_id", "position"):
        out[c] = _numeric(df[c], c, integer=True).astype("Int64")
    for c in ("request_id", "page", "policy"):
        s = df[c].astype(object)
        out[c] = s.where(s.notna(), None).map(lambda v: v if v is None else str(v))
    out["value"] = _numeric(df["value"], "value", integer=False).astype(float)
    out["propensity"] = _numeric(df["propensity"], "propensity", integer=False).astype(float)
    return out[EVENT_COLUMNS]


def _numeric(s: pd.Series, name: str, *, integer: bool) -> pd.Series:
    """Coerce to numbers; a value that is not one (or not an integer) raises with its row numbers."""
    if len(s) == 0:
        return pd.Series([], dtype="Int64" if integer else float)
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() & s.notna()
    if integer:
        f = num.astype(float)
        bad |= num.notna() & ((f != np.floor(f)) | ~np.isfinite(f))
    rows = np.flatnonzero(bad.to_numpy())
    if len(rows):
        vals = [s.iloc[i] for i in rows[:5]]
        raise ValueError(f"column {name}: not {'an integer' if integer else 'a number'} in row(s) "
                         f"{rows[:10].tolist()} (e.g. {vals!r:.80})")
    return num.astype("Int64") if integer else num


# ----------------------------------------------------------------------------- ingest
def ingest_source(settings, data: SourceData, progress: bool = True, chunk_size: int = 50_000) -> dict:
    """Write a source into ``settings.database_url``: catalog upsert, then events in chunks.

    The whole event frame is validated first (a bad row raises ``IngestError`` with its
    position in ``data.events`` before anything is written). Each chunk is then one
    transaction of :func:`store.ingest.ingest_events` (idempotent: a second run inserts
    nothing; an event whose stream/item is neither in ``data`` nor in the database rejects its
    chunk, earlier chunks stay committed). The simulator's truth, when present, is written to
    ``settings.artifact_dir / "simulator_truth.parquet"``. Returns a summary dict.
    """
    from store.ingest import IngestError, RowError, ingest_events, upsert_catalog, validate_events

    if hasattr(settings, "ensure_dirs"):
        settings.ensure_dirs()
    url = settings.database_url
    t0 = time.perf_counter()
    events = data.events.reset_index(drop=True)
    # validate the whole log before anything is written (row numbers = positions in data.events)
    _, errors = validate_events(events)
    if errors:
        raise IngestError(errors)
    catalog = upsert_catalog(url, **{name: getattr(data, name) for name in CATALOG_TABLES})
    t_cat = time.perf_counter() - t0

    if len(events) and not events["ts"].is_monotonic_increasing:
        events = events.sort_values("ts", kind="stable")
    received = inserted = duplicates = 0
    bar = None
    if progress and len(events):
        from tqdm import tqdm
        bar = tqdm(total=len(events), unit="ev", desc=f"ingest {data.name}", mininterval=0.5)
    t1 = time.perf_counter()
    try:
        for start in range(0, len(events), chunk_size):
            part = events.iloc[start:start + chunk_size]
            try:
                res = ingest_events(url, part)
            except IngestError as exc:      # earlier chunks stay committed (a re-run skips them)
                rows = part.index.to_numpy()
                raise IngestError([RowError(int(rows[e.row]) if 0 <= e.row < len(rows) else e.row,
                                            e.field, e.reason) for e in exc.errors]) from None
            received += res.received
            inserted += res.inserted
            duplicates += res.duplicates
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    t_events = time.perf_counter() - t1

    truth_path = None
    if data.truth is not None:
        truth_path = Path(settings.artifact_dir) / TRUTH_FILE
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        data.truth.to_parquet(truth_path, index=False)
    seconds = time.perf_counter() - t0
    summary = {
        "source": data.name,
        "catalog": {name: int(catalog.get(name, 0)) for name in CATALOG_TABLES},
        "received": int(received),
        "inserted": int(inserted),
        "duplicates": int(duplicates),
        "seconds": round(seconds, 3),
        "catalog_seconds": round(t_cat, 3),
        "events_per_s": round(received / t_events, 1) if t_events > 0 and received else 0.0,
        "truth_path": str(truth_path) if truth_path else None,
    }
    log.info("ingested source %s: %s", data.name, summary)
    return summary


__all__ = ["SourceData", "ingest_source", "EVENT_COLUMNS", "CATALOG_COLUMNS", "CATALOG_TABLES",
           "TRUTH_FILE", "normalize_events", "normalize_catalog", "empty_frame", "to_utc_us"]

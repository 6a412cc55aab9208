"""A generic events file in our contract (CSV or Parquet), with an optional catalog folder.

Events: the columns of ``EVENT_COLUMNS``; ``event_id, user_id, ts, type`` are required, the
others may be missing (→ NULL). ``ts`` may be ISO-8601 text (naive = UTC), epoch seconds or a
timestamp column. Row-level validation (types, required ids per event type, catalog
references) happens at ingest (``store.ingest.ingest_events``), which reports row numbers.

Catalog: ``catalog_dir`` may hold ``users``, ``items``, ``streams``, ``stream_items`` and
``live_windows`` as ``.parquet`` or ``.csv`` (any subset) with the table's columns. Without a
catalog folder a minimal one is derived from the events: every stream and item seen (category
0, price 0, streamer = stream), the (stream, item) pairs seen together, and one live window
per stream from its first event to one second after its last.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from . import (CATALOG_COLUMNS, CATALOG_TABLES, SourceData, empty_frame, normalize_catalog,
               normalize_events)

REQUIRED_COLUMNS = ["event_id", "user_id", "ts", "type"]
_CATALOG_KEYS = {"users": ["user_id"], "items": ["item_id"], "streams": ["stream_id"],
                 "stream_items": ["stream_id", "item_id"], "live_windows": ["stream_id", "start_ts", "end_ts"]}


def _read_table(path: Path) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv" or suffix.endswith(".csv.gz"):
        return pd.read_csv(path, dtype={"event_id": str, "request_id": str, "page": str, "type": str})
    raise ValueError(f"{path}: unsupported file type (use .csv or .parquet)")


def _find(catalog_dir: Path, name: str) -> Optional[Path]:
    for ext in (".parquet", ".pq", ".csv", ".csv.gz"):
        p = catalog_dir / f"{name}{ext}"
        if p.exists():
            return p
    return None


def derive_catalog(events: pd.DataFrame) -> dict:
    """The minimal catalog implied by an event frame (see module docstring)."""
    users = pd.DataFrame({"user_id": np.sort(events["user_id"].unique())})
    sid = events["stream_id"].dropna().astype("int64")
    iid = events["item_id"].dropna().astype("int64")
    streams = pd.DataFrame({"stream_id": np.sort(sid.unique())})
    streams["streamer_id"] = streams["stream_id"]
    streams["category"] = 0
    items = pd.DataFrame({"item_id": np.sort(iid.unique()), "category": 0, "price": 0.0})
    pairs = events[events["stream_id"].notna() & events["item_id"].notna()][["stream_id", "item_id"]]
    stream_items = pairs.astype("int64").drop_duplicates().sort_values(["stream_id", "item_id"])
    stream_items["is_core"] = False
    with_stream = events[events["stream_id"].notna()]
    if len(with_stream):
        span = with_stream.groupby(with_stream["stream_id"].astype("int64"))["ts"].agg(["min", "max"])
        live = pd.DataFrame({"stream_id": span.index.to_numpy(), "start_ts": span["min"].to_numpy(),
                             "end_ts": (span["max"] + pd.Timedelta(seconds=1)).to_numpy()})
        streams = streams.merge(span["min"].rename("created_at"), left_on="stream_id", right_index=True, how="left")
    else:
        live = pd.DataFrame({"stream_id": [], "start_ts": [], "end_ts": []})
    return {"users": normalize_catalog("users", users), "items": normalize_catalog("items", items),
            "streams": normalize_catalog("streams", streams),
            "stream_items": normalize_catalog("stream_items", stream_items),
            "live_windows": normalize_catalog("live_windows", live)}


def load_events_file(path: Union[str, Path], catalog_dir: Union[str, Path, None] = None) -> SourceData:
    """Load events (CSV / Parquet) and the catalog (from ``catalog_dir`` or derived)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"events file not found: {path}")
    raw = _read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s): {', '.join(missing)} "
                         f"(required: {', '.join(REQUIRED_COLUMNS)})")
    try:
        events = normalize_events(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the events: {exc}") from exc
    if catalog_dir is None:
        catalog = derive_catalog(events)
    else:
        cdir = Path(catalog_dir)
        if not cdir.is_dir():
            raise FileNotFoundError(f"catalog folder not found: {cdir}")
        catalog = {}
        for name in CATALOG_TABLES:
            p = _find(cdir, name)
            if p is None:
                catalog[name] = empty_frame(name)
                continue
            frame = _read_table(p)
            missing = [c for c in _CATALOG_KEYS[name] if c not in frame.columns]
            if missing:
                raise ValueError(f"{p}: missing required column(s): {', '.join(missing)} "
                                 f"(columns: {', '.join(CATALOG_COLUMNS[name])})")
            catalog[name] = normalize_catalog(name, frame)
    return SourceData(name=f"events:{path.name}", events=events, truth=None, **catalog)


__all__ = ["load_events_file", "derive_catalog", "REQUIRED_COLUMNS"]

"""The statistics job (a worker's ``compute_statistics``): event log → point-in-time statistics
(feature_repo.statistics) → Parquet → apply → materialize (feature_repo.parquet)."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Optional

from .parquet import materialize, state_path, write_statistics
from .statistics import _as_us, _to_us, compute_statistics, with_latest_schedules

log = logging.getLogger(__name__)


def run_statistics(settings, end: Optional[datetime] = None, progress: bool = True) -> dict:
    """Event log -> statistics -> Parquet -> apply -> materialize up to ``end`` (default now)."""
    from store.ingest import load_catalog, load_events
    t0 = time.perf_counter()
    end = end or datetime.now(timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    events = load_events(settings.database_url, end=end)
    catalog = load_catalog(settings.database_url)
    t1 = time.perf_counter()
    frames = compute_statistics(events, catalog.get("streams"), bucket_s=settings.stats_bucket_s, end=end,
                                items=catalog.get("items"))
    if "stream_realtime" in frames:
        frames["stream_realtime"] = with_latest_schedules(frames["stream_realtime"], events, end)
    t2 = time.perf_counter()
    rows = write_statistics(settings, frames)
    t3 = time.perf_counter()
    state_file = state_path(settings)
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    before = None
    if state:
        prev_end_us = _to_us(datetime.fromisoformat(state["end"]))
        before = {"count_before_prev_end": int((_as_us(events["ts"]) < prev_end_us).sum()) if len(events) else 0}
    mat = materialize(settings, frames, end, events_before=before, progress=progress)
    t4 = time.perf_counter()
    state_file.write_text(json.dumps({"end": end.isoformat(), "events_before_end": int(len(events))}))
    summary = {"events": int(len(events)), "rows": rows, "end": end.isoformat(), "materialize": mat["mode"],
               "seconds": {"load": round(t1 - t0, 3), "compute": round(t2 - t1, 3), "write": round(t3 - t2, 3),
                           "materialize": round(t4 - t3, 3), "total": round(t4 - t0, 3)},
               "events_per_s": round(len(events) / max(t2 - t1, 1e-9))}
    msg = (f"statistics: {len(events):,} events -> {sum(rows.values()):,} rows in {t2 - t1:.2f}s "
           f"({summary['events_per_s']:,} events/s); materialize ({mat['mode']}) {t4 - t3:.2f}s")
    log.info(msg)
    if progress:
        print(msg, flush=True)
    return summary


__all__ = ["run_statistics"]

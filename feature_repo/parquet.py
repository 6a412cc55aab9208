"""The statistics' Parquet writer and Feast materialization: frames of feature_repo.statistics →
``<feast_repo>/data/<view>.parquet`` (atomic replace) → materialize into the online store
(incremental when nothing arrived late)."""
from __future__ import annotations

import contextlib
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Optional

import pandas as pd

from .definitions import BATCH_VIEWS, TIMESTAMP_FIELD, arrow_schema, source_path, view_columns


def write_statistics(settings, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Write each frame to ``<feast_repo>/data/<view>.parquet`` (atomic replace, us UTC timestamps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from .store import data_dir
    d = data_dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    counts = {}
    for view, df in frames.items():
        bucket = df.attrs.get("bucket_s")
        if view in BATCH_VIEWS and bucket is not None and int(bucket) != int(settings.stats_bucket_s):
            raise ValueError(f"{view} was computed with {bucket}s buckets but settings.stats_bucket_s is "
                             f"{settings.stats_bucket_s} (the views' TTLs follow the setting)")
        schema = arrow_schema(view)
        df = df[view_columns(view)].copy()
        df[TIMESTAMP_FIELD] = pd.to_datetime(df[TIMESTAMP_FIELD], utc=True).astype("datetime64[us, UTC]")
        table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
        path = source_path(d, view)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp, row_group_size=256_000)
        os.replace(tmp, path)
        counts[view] = len(df)
    return counts


def state_path(settings) -> Path:
    return Path(settings.feast_repo) / "statistics_state.json"


def materialize(settings, frames: dict[str, pd.DataFrame], end: datetime, *, events_before: Optional[dict] = None,
                progress: bool = False) -> dict:
    """Materialize the written views up to ``end``.

    Incremental (``materialize_incremental``) when every view was materialized before and no event
    arrived late (before the previous end); otherwise a full ``materialize`` from the earliest row.
    """
    from .store import apply_definitions
    store = apply_definitions(settings)
    state_file = state_path(settings)
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    views = list(frames)
    prev_end = None
    incremental = False
    if state and events_before is not None:
        prev_end = datetime.fromisoformat(state["end"])
        same = events_before.get("count_before_prev_end") == state.get("events_before_end")
        done = all(store.get_feature_view(v).most_recent_end_time is not None for v in views)
        incremental = bool(same and done and prev_end <= end)
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
    with quiet:                      # Feast prints its own progress to stdout
        if incremental:
            store.materialize_incremental(end_date=end, feature_views=views)
            mode = "incremental"
        else:
            starts = [f[TIMESTAMP_FIELD].min() for f in frames.values() if len(f)]
            start = (min(starts).to_pydatetime() if starts else end) - pd.Timedelta(seconds=1).to_pytimedelta()
            store.materialize(start_date=start, end_date=end, feature_views=views)
            mode = "full"
    return {"mode": mode, "end": end.isoformat(), "previous_end": prev_end.isoformat() if prev_end else None}


__all__ = ["write_statistics", "materialize", "state_path"]

"""Thin, idempotent Celery tasks: each one keys its work by its input version and calls library
code in store/, feature_repo/ and ranking/. Heavy libraries are imported inside the tasks."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional, Sequence

from store.settings import Settings

from .celery_app import TASK_NAMES, app

log = logging.getLogger(__name__)


def _settings() -> Settings:
    return Settings.from_env()


def _parse_time(value: Optional[str]) -> Optional[datetime]:
    if value is None:
        return None
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@app.task(name=TASK_NAMES["compute_statistics"], bind=True)
def compute_statistics(self, end: Optional[str] = None) -> dict:
    """Event log → windowed statistics (Parquet) → Feast materialize, once per (data, hour)."""
    from feature_repo.statistics_job import run_statistics
    from store.ingest import data_version
    from store.jobs import job_run

    settings = _settings()
    end_t = _parse_time(end) or datetime.now(timezone.utc)
    bucket = settings.stats_bucket_s
    end_key = int(end_t.timestamp()) // bucket * bucket
    key = f"{data_version(settings.database_url)}@{end_key}"
    with job_run(settings.database_url, "compute_statistics", key) as job:
        if job.skip:
            log.info("compute_statistics %s already done", key)
            return dict(job.detail, skipped=True)
        job.detail.update(run_statistics(settings, end=end_t, progress=False))
        job.detail["key"] = key
    return dict(job.detail, skipped=False)


@app.task(name=TASK_NAMES["push_realtime"], bind=True)
def push_realtime(self, event_ids: Sequence[str], at: Optional[str] = None, outbox_id: Optional[int] = None) -> dict:
    """Recompute the real-time counters and lists of the streams and users these events touch;
    push them (feature_repo.realtime.push_entities).

    Idempotent: the rows are recomputed from the event log (not incremented), so running it twice
    pushes the same values. Without ``at`` the tasks running at once in this worker share one
    push (feature_repo.coalesce: the task returns when a push that began after it has landed);
    with ``at`` (tests, backfills) it pushes the state as of that instant by itself.
    ``outbox_id``: the batch's store.outbox row, deleted once the push has landed.
    """
    from feature_repo.coalesce import coalescer_for
    from feature_repo.realtime import push_entities
    from store import outbox
    from store.ingest import load_events

    settings = _settings()
    touched = load_events(settings.database_url, event_ids=list(event_ids))
    if touched.empty:
        outbox.done(settings.database_url, outbox_id)
        return {"events": 0, "rows": 0}
    streams = sorted({int(s) for s in touched.stream_id.dropna()})
    users = sorted({int(u) for u in touched.user_id})
    out = {"events": len(touched), "streams": len(streams), "users": len(users)}
    if at is not None:
        out["rows"] = push_entities(settings, streams, users, _parse_time(at))
    else:
        c = coalescer_for((settings.database_url, settings.feast_online, str(settings.feast_repo)),
                          lambda s, u, t: push_entities(settings, s, u, t))
        c.submit(streams, users)
        out["coalesced"] = True
    outbox.done(settings.database_url, outbox_id)
    from .metrics import PUSH_LAG
    newest = touched["ts"].max()
    if at is None and newest is not None and newest == newest:     # live pushes only, not backfills
        PUSH_LAG.observe(max((datetime.now(timezone.utc) - newest.to_pydatetime()).total_seconds(), 0.0))
    return out


@app.task(name=TASK_NAMES["recover_jobs"], bind=True)
def recover_jobs(self, push_age_s: Optional[float] = None) -> dict:
    """Re-send the tasks of jobs whose worker died mid-run (lease expired; store.jobs) and the
    unacknowledged real-time pushes older than ``push_age_s`` (default the lease; store.outbox)."""
    from .celery_app import recover_jobs_once, resend_pushes_once
    settings = _settings()
    return {"resent": recover_jobs_once(app, settings),
            "pushes_resent": resend_pushes_once(app, settings, older_than_s=push_age_s)}


@app.task(name=TASK_NAMES["train_gbdt"], bind=True)
def train_gbdt(self, end: Optional[str] = None) -> dict:
    """V1 LightGBM ranker on point-in-time Feast features; idempotent per data version."""
    from ranking.gbdt import train_and_register

    settings = _settings()
    return train_and_register(settings, end=_parse_time(end))


@app.task(name=TASK_NAMES["train_graph_embeddings"], bind=True)
def train_graph_embeddings(self, end: Optional[str] = None) -> dict:
    """Metapath2vec embeddings of users, items and streams; one registered version per data version."""
    from graph.job import train_and_register_embeddings

    settings = _settings()
    return train_and_register_embeddings(settings, end=_parse_time(end))


@app.task(name=TASK_NAMES["train_retrieval"], bind=True)
def train_retrieval(self, end: Optional[str] = None) -> dict:
    """The retrieval two-tower (retrieval/job.py); one registered version per data version,
    promoted only if its held-out recall is not below the active version's."""
    from retrieval.job import train_and_register_retrieval

    row = train_and_register_retrieval(_settings(), end=_parse_time(end))
    return {k: v for k, v in row.items() if k in ("name", "version", "status", "artifact_path", "data_version",
                                                  "metrics", "skipped")}


@app.task(name=TASK_NAMES["train_ranker"], bind=True)
def train_ranker(self, end: Optional[str] = None) -> dict:
    """The transformer ranker (GBDT leaves of the active V1, Metapath2vec vectors of the active
    version); one registered version per data version, promoted only if not worse than the active."""
    from ranking.job import train_and_register_ranker

    settings = _settings()
    row = train_and_register_ranker(settings, end=_parse_time(end))
    return {k: v for k, v in row.items() if k in ("name", "version", "status", "artifact_path", "data_version",
                                                  "metrics", "skipped", "report")}

"""The Celery app. Configuration comes from :class:`store.settings.Settings`, read lazily.

Importing this module reads no environment variable and imports neither torch nor feast
(a prefork parent that touched torch deadlocks its children — NOTES.md). Queues:

- ``realtime``  push_realtime: small, frequent, latency matters
- ``default``   compute_statistics / materialize
- ``training``  train_gbdt, train_graph_embeddings, train_ranker, train_retrieval (torch): run it with ``--pool=solo``

The beat schedule is :data:`BEAT_SCHEDULE` below, in one readable place. It is what beat runs
unless ``STREAMRANK_BEAT_SCHEDULE`` (``Settings.beat_schedule``) overrides entries of it by name:
a comma-separated list of ``ENTRY=SECONDS`` (that entry runs every SECONDS instead, at whole
multiples of SECONDS on the UTC clock, as ``crontab(minute=5)`` is hourly at :05) or ``ENTRY=off``
(not scheduled). Unset or empty: the default schedule, unchanged. E.g. a test runs the statistics
every 5 s, in periods that match its job key (``STREAMRANK_STATS_BUCKET_S=5``)::

    STREAMRANK_BEAT_SCHEDULE="statistics-hourly=5,gbdt-daily=off" STREAMRANK_STATS_BUCKET_S=5 streamrank beat

An unknown entry name or a bad value raises ``ValueError`` naming the variable (beat does not start).
"""
from __future__ import annotations

import logging
import math
import threading
from datetime import timedelta
from typing import Optional

from celery import Celery, signals
from celery.schedules import crontab, schedstate, schedule

from store.settings import Settings

TASK_NAMES = {
    "compute_statistics": "streamrank.compute_statistics",
    "push_realtime": "streamrank.push_realtime",
    "train_gbdt": "streamrank.train_gbdt",
    "train_graph_embeddings": "streamrank.train_graph_embeddings",
    "train_ranker": "streamrank.train_ranker",
    "train_retrieval": "streamrank.train_retrieval",
    "recover_jobs": "streamrank.recover_jobs",
}

BEAT_SCHEDULE = {
    # historical statistics → parquet → Feast materialize, every hour at :05
    "statistics-hourly": {"task": TASK_NAMES["compute_statistics"], "schedule": crontab(minute=5)},
    # Metapath2vec on the user–item–stream graph daily at 02:00 UTC (warm-started from the active version)
    "graph-embeddings-daily": {"task": TASK_NAMES["train_graph_embeddings"], "schedule": crontab(hour=2, minute=0)},
    # V1 ranker retrained daily at 03:00 UTC on the latest statistics
    "gbdt-daily": {"task": TASK_NAMES["train_gbdt"], "schedule": crontab(hour=3, minute=0)},
    # the transformer ranker daily at 04:00 UTC (after the embeddings and V1, whose outputs it reads)
    "ranker-daily": {"task": TASK_NAMES["train_ranker"], "schedule": crontab(hour=4, minute=0)},
    # the retrieval two-tower daily at 05:00 UTC (reads the active embeddings)
    "retrieval-daily": {"task": TASK_NAMES["train_retrieval"], "schedule": crontab(hour=5, minute=0)},
    # jobs whose worker died mid-run (lease expired) are sent again; every worker also does this
    "recover-jobs": {"task": TASK_NAMES["recover_jobs"], "schedule": 60.0},
}


class aligned_every(schedule):
    """Every ``seconds``, at the instants that are whole multiples of ``seconds`` on the UTC clock
    (the period of a job keyed by ``floor(now / seconds)``, e.g. compute_statistics with
    ``STREAMRANK_STATS_BUCKET_S`` = ``seconds``, is then run once per period). Like crontab, a
    new entry first runs at the next boundary, and a late beat runs it once, not once per missed
    period."""

    def __init__(self, seconds: float, nowfun=None, app=None):
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"aligned_every needs a positive number of seconds, got {seconds!r}")
        super().__init__(run_every=timedelta(seconds=seconds), relative=False, nowfun=nowfun, app=app)

    def _period(self) -> float:
        return self.run_every.total_seconds()

    def remaining_estimate(self, last_run_at):
        p = self._period()
        last = self.maybe_make_aware(last_run_at).timestamp()
        now = self.maybe_make_aware(self.now()).timestamp()
        return timedelta(seconds=max((math.floor(last / p) + 1) * p - now, 0.0))

    def is_due(self, last_run_at):
        p = self._period()
        last = self.maybe_make_aware(last_run_at).timestamp()
        now = self.maybe_make_aware(self.now()).timestamp()
        k = math.floor(now / p)
        next_s = max((k + 1) * p - now, 0.001)           # the next boundary after now
        return schedstate(is_due=k > math.floor(last / p), next=next_s)

    def __reduce__(self):
        return self.__class__, (self._period(), self.nowfun)

    def __repr__(self) -> str:
        return f"<aligned_every {self._period():g}s>"


def beat_schedule(spec: str = "") -> dict:
    """:data:`BEAT_SCHEDULE` with the overrides of ``STREAMRANK_BEAT_SCHEDULE`` applied (module
    docstring): ``"statistics-hourly=5,recover-jobs=10,gbdt-daily=off"``. ``""``: the default."""
    out = {name: dict(entry) for name, entry in BEAT_SCHEDULE.items()}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = (x.strip() for x in part.partition("="))
        if not sep or name not in BEAT_SCHEDULE:
            raise ValueError(f"STREAMRANK_BEAT_SCHEDULE: {part!r} is not ENTRY=SECONDS or ENTRY=off with ENTRY "
                             f"one of {', '.join(BEAT_SCHEDULE)}")
        if value.lower() == "off":
            out.pop(name, None)
            continue
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"STREAMRANK_BEAT_SCHEDULE: {name}={value!r}: give a positive number of seconds or off")
        out[name]["schedule"] = aligned_every(seconds)
    return out


TASK_ROUTES = {
    TASK_NAMES["push_realtime"]: {"queue": "realtime"},
    TASK_NAMES["compute_statistics"]: {"queue": "default"},
    TASK_NAMES["train_gbdt"]: {"queue": "training"},
    TASK_NAMES["train_graph_embeddings"]: {"queue": "training"},
    TASK_NAMES["train_ranker"]: {"queue": "training"},
    TASK_NAMES["train_retrieval"]: {"queue": "training"},
    TASK_NAMES["recover_jobs"]: {"queue": "default"},
}

LONGEST_JOB_S = 6 * 3600      # Redis visibility timeout must exceed the longest job (celery#5935)


def celery_config(settings: Settings) -> dict:
    """Celery configuration for ``settings`` (embedded broker by default, Redis when the URL says so)."""
    conf = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,                 # a task is acknowledged after it ran ...
        "task_reject_on_worker_lost": True,     # ... and re-queued if its worker was killed
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "default",
        "task_routes": TASK_ROUTES,
        "task_track_started": True,
        "result_expires": 7 * 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "beat_schedule": beat_schedule(settings.beat_schedule),
        "timezone": "UTC",
        "worker_hijack_root_logger": False,
    }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        conf["broker_transport_options"] = {"visibility_timeout": LONGEST_JOB_S}
        conf["result_backend_transport_options"] = {"visibility_timeout": LONGEST_JOB_S}
    elif settings.broker_url.startswith("filesystem://"):
        folder = settings.home / "celery-fs"
        for sub in ("out", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "out"), "data_folder_out": str(folder / "out"),
            "processed_folder": str(folder / "processed"), "polling_interval": settings.broker_polling_s}
    return conf


def _tune_embedded_broker(settings: Settings) -> None:
    if settings.broker_url.startswith("sqla+"):
        # broker_transport_options={"polling_interval": ...} crashes the sqla transport (kombu passes
        # it to create_engine); the class attribute is the working knob: ~1 s -> ~55 ms round trip.
        from kombu.transport import sqlalchemy as kombu_sqla
        kombu_sqla.Transport.polling_interval = settings.broker_polling_s
    for url in (settings.broker_url, settings.result_backend):
        if "sqlite:///" in url:
            from pathlib import Path
            Path(url.split("sqlite:///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app bound to ``settings`` (for the API and the CLI, which only send tasks by name)."""
    settings = settings or Settings.from_env()
    _tune_embedded_broker(settings)
    celery = Celery("streamrank")
    celery.conf.update(celery_config(settings))
    return celery


def _lazy_config() -> dict:
    settings = Settings.from_env()
    _tune_embedded_broker(settings)
    return celery_config(settings)


# The worker's app (``celery -A workers.celery_app worker``): configured on first use, not at import.
app = Celery("streamrank", include=["workers.tasks"])
app.add_defaults(_lazy_config)


# ----------------------------------------------------------------------------- job leases
# store.jobs records which Celery task holds a job's lease (so a dead worker's job can be re-sent
# with the same task id): the worker tells it around every task.
_task_tokens = threading.local()


@signals.task_prerun.connect
def _enter_task(task_id=None, task=None, kwargs=None, **_):
    from store.jobs import current_task

    from .metrics import task_started
    _task_tokens.token = current_task.set((task.name, task_id, dict(kwargs or {})))
    task_started(task_id)


@signals.task_postrun.connect
def _leave_task(task_id=None, task=None, state=None, **_):
    from store.jobs import current_task

    from .metrics import task_finished
    token = getattr(_task_tokens, "token", None)
    if token is not None:
        current_task.reset(token)
        _task_tokens.token = None
    task_finished(task_id, getattr(task, "name", "?"), state or "")


@signals.task_failure.connect
def _count_failure(sender=None, **_):
    from .metrics import FAILURES
    FAILURES.labels(getattr(sender, "name", "?")).inc()


@signals.task_retry.connect
def _count_retry(sender=None, **_):
    from .metrics import RETRIES
    RETRIES.labels(getattr(sender, "name", "?")).inc()


def recover_jobs_once(celery: Celery, settings: Settings) -> list:
    """Re-send the tasks of jobs whose process died (store.jobs.recover_stale_jobs)."""
    from store.jobs import recover_stale_jobs

    def resend(name, task_id, kwargs):
        celery.send_task(name, kwargs=kwargs, task_id=task_id)
    return recover_stale_jobs(settings.database_url, resend, lease_s=settings.job_lease_s)


def resend_pushes_once(celery: Celery, settings: Settings, older_than_s: Optional[float] = None) -> list:
    """Re-send the real-time pushes of event batches nobody acknowledged (store.outbox): the API
    died between its commit and its enqueue, the broker refused the message, or the worker died
    mid-push. Default age: the job lease (a push normally lands within a second)."""
    from store.outbox import resend_stale

    def send(event_ids, outbox_id):
        celery.send_task(TASK_NAMES["push_realtime"], args=[event_ids], kwargs={"outbox_id": outbox_id})
    age = settings.job_lease_s if older_than_s is None else older_than_s
    return resend_stale(settings.database_url, send, older_than_s=age)


@signals.worker_ready.connect
def _start_job_watchdog(sender=None, **_):
    """Every worker checks for dead jobs every half lease: a training worker killed with -9 is
    re-run by the next worker to look (its own replacement, or the real-time worker)."""
    settings = Settings.from_env()
    every = max(settings.job_lease_s / 2, 0.5)
    log = logging.getLogger("streamrank.jobs")
    if settings.worker_metrics_port:
        from .metrics import serve
        serve(settings.worker_metrics_port)

    def loop():
        stop = threading.Event()
        while not stop.wait(every):
            try:
                recover_jobs_once(app, settings)
                resend_pushes_once(app, settings)
            except Exception as exc:        # the database may be briefly away: look again later
                log.warning("job watchdog: %s: %s", type(exc).__name__, exc)
    threading.Thread(target=loop, name="job-watchdog", daemon=True).start()

"""The app's long-lived resources, created lazily on first use and torn down by :func:`close_app`.

Like flaskr's ``get_db()``: routes call :func:`get_runtime` and take what they need; nothing is
opened at ``create_app`` time (so ``create_app()`` is instant, gunicorn can fork after it, and
Feast / LightGBM are imported only by the first request that needs them).

- ``online``   feature_repo.online.OnlineFeatures: reads Feast's online store directly
               (feature_repo.direct); Feast itself is not imported by the API
- ``snapshot`` api.snapshot.StreamSnapshot, its refresh thread started on first use (it reads
               through a direct reader of its own, feature_repo.direct)
- ``models``   api.scoring.ModelHolder for the ``gbdt`` model (V1)
- ``ranker``   api.scoring.ModelHolder for the ``ranker`` (the transformer ranker; served when a
               version is active, the GBDT otherwise)
- ``celery``   a Celery app from workers.celery_app.make_celery (send_task only)
- ``journal``  api.journal.ImpressionJournal: the answers' impressions, appended before the answer
               and drained into the event log by its flusher thread
SQL engines are the process-wide ones of store.db.get_engine (pooled; sessions are per call).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Optional

from flask import current_app

log = logging.getLogger(__name__)

EXTENSION = "streamrank"


class StoreBreaker:
    """After a failed read of the online store (locked SQLite, Redis down), requests skip the
    store for ``retry_s`` and answer at once (degraded: popularity from the snapshot) instead of
    each waiting out its timeout; the first request after that tries the store again."""

    def __init__(self, retry_s: float = 2.0):
        self.retry_s = retry_s
        self._until = 0.0
        self.error: Optional[str] = None

    def open_reason(self) -> Optional[str]:
        if time.monotonic() < self._until:
            return f"feature store unreadable ({self.error}); retried every {self.retry_s:g} s"
        return None

    def failed(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {str(exc)[:120]}"
        self._until = time.monotonic() + self.retry_s

    def ok(self) -> None:
        if self.error is not None:
            self.error, self._until = None, 0.0


class Runtime:
    def __init__(self, settings, config):
        self.settings = settings
        self.config = config
        self._lock = threading.RLock()
        self._online = None
        self._snapshot = None
        self._models = None
        self._ranker = None
        self._retrieval = None
        self._celery = None
        self._journal = None
        self._page_config = None
        self._slate_value = None
        self.closed = False
        # Online reads go through feature_repo.direct (a SQLite connection per thread; Redis clients
        # are thread-safe), so request threads need no lock around them. (Feast's own SQLite store
        # shares ONE connection between threads and needed one.)
        self.feast_lock = contextlib.nullcontext()
        self.store_breaker = StoreBreaker()

    @property
    def online(self):
        if self._online is None:
            with self._lock:
                if self._online is None:
                    from feature_repo.online import OnlineFeatures
                    self._online = OnlineFeatures(self.settings)
        return self._online

    @property
    def snapshot(self):
        if self._snapshot is None:
            with self._lock:
                if self._snapshot is None:
                    from feature_repo.online import OnlineFeatures

                    from .snapshot import StreamSnapshot
                    # the refresh thread reads through its own direct reader (its own SQLite
                    # connection): no lock shared with the per-request user reads
                    online = OnlineFeatures(self.settings)
                    snap = StreamSnapshot(self.settings, online,
                                          interval_s=self.config.get("SNAPSHOT_INTERVAL_S")
                                          or self.settings.snapshot_interval_s)
                    if self.config.get("SNAPSHOT_BACKGROUND", True) and not self.closed:
                        snap.start()
                    self._snapshot = snap
        return self._snapshot

    @property
    def models(self):
        if self._models is None:
            with self._lock:
                if self._models is None:
                    from .scoring import ModelHolder
                    self._models = ModelHolder(self.settings, "gbdt",
                                               check_s=self.config.get("MODEL_CHECK_S", 2.0))
        return self._models

    @property
    def ranker(self):
        if self._ranker is None:
            with self._lock:
                if self._ranker is None:
                    from .scoring import ModelHolder, load_ranker
                    self._ranker = ModelHolder(self.settings, "ranker", loader=load_ranker, companion="metapath2vec",
                                               check_s=self.config.get("MODEL_CHECK_S", 2.0))
        return self._ranker

    @property
    def page_config(self):
        """policy.page.PageConfig from the settings (STREAMRANK_EXPLORE_* / _RANDOMISE_*); the app
        config's PAGE_CONFIG replaces it (tests)."""
        if self._page_config is None:
            cfg = self.config.get("PAGE_CONFIG")
            if cfg is None:
                from policy.explore import ExploreConfig
                from policy.page import PageConfig
                from policy.rerank import RerankConfig
                s = self.settings
                cfg = PageConfig(explore=ExploreConfig(share=s.explore_share, cold_below=s.explore_cold_below),
                                 randomise_share=s.randomise_share, randomise_top=s.randomise_top,
                                 rerank=RerankConfig(width=s.rerank_width, top=s.rerank_top,
                                                     max_per_category=s.rerank_max_per_category))
            self._page_config = cfg
        return self._page_config

    @property
    def slate_value(self):
        """The re-ranker's slot value: the slate model at STREAMRANK_SLATE_MODEL (policy.slate_model),
        loaded once; None (the ranker's scores) when unset or unreadable (logged)."""
        if self._slate_value is None:
            with self._lock:
                if self._slate_value is None:
                    value = False
                    path = self.config.get("SLATE_MODEL", self.settings.slate_model)
                    if path:
                        try:
                            from policy.slate_model import SlateValue, load_slate_model
                            value = SlateValue(load_slate_model(path))
                        except Exception as exc:
                            log.error("slate model %s unreadable, re-ranking on the ranker's scores: %s: %s",
                                      path, type(exc).__name__, exc)
                    self._slate_value = value
        return self._slate_value or None

    @property
    def retrieval(self):
        """The retrieval stage (api.retrieval): the active two-tower and its live-stream index."""
        if self._retrieval is None:
            with self._lock:
                if self._retrieval is None:
                    from .retrieval import Retrieval
                    self._retrieval = Retrieval(self.settings, lambda: self.snapshot,
                                                check_s=self.config.get("MODEL_CHECK_S", 2.0),
                                                background=bool(self.config.get("SNAPSHOT_BACKGROUND", True))
                                                and not self.closed)
        return self._retrieval

    @property
    def celery(self):
        if self._celery is None:
            with self._lock:
                if self._celery is None:
                    from workers.celery_app import make_celery
                    app = make_celery(self.settings)
                    # an unreachable broker must fail fast: the events route answers anyway
                    app.conf.broker_connection_timeout = self.config.get("BROKER_TIMEOUT_S", 2.0)
                    app.conf.broker_connection_retry = False
                    app.conf.broker_connection_max_retries = 0
                    self._celery = app
        return self._celery

    @property
    def journal(self):
        if self._journal is None:
            with self._lock:
                if self._journal is None:
                    from .journal import ImpressionJournal
                    s = self.settings
                    j = ImpressionJournal(s.journal_dir, lambda events, version: write_impressions(s, events, version),
                                          fsync=s.journal_fsync, max_events=s.journal_max_events,
                                          flush_interval_s=s.journal_flush_s)
                    if not self.closed:
                        j.start()       # also drains what a killed process left behind
                    self._journal = j
        return self._journal

    def close(self) -> None:
        """Stop the snapshot thread, drain the journal, release the broker connections (idempotent)."""
        with self._lock:
            self.closed = True
            snap, self._snapshot = self._snapshot, None
            celery, self._celery = self._celery, None
            journal, self._journal = self._journal, None
            retrieval, self._retrieval = self._retrieval, None
        if retrieval is not None:
            retrieval.close()
        if snap is not None:
            snap.stop()
        if journal is not None:
            journal.close()
        if celery is not None:
            with contextlib.suppress(Exception):
                celery.close()


def write_impressions(settings, events: list, model_version) -> None:
    """The journal's sink: one batch into the event log (store.ingest.ingest_impressions:
    idempotent ids; a database error raises and the journal retries)."""
    from store.ingest import ingest_impressions
    ingest_impressions(settings.database_url, events, model_version=model_version)


def private_store(settings):
    """A ``feast.FeatureStore`` not shared with the rest of the process (its own online-store
    connection), on the same repo and registry as ``feature_repo.store.get_store``."""
    from feature_repo.store import new_store
    return new_store(settings)


def get_runtime() -> Runtime:
    return current_app.extensions[EXTENSION]


def close_app(app) -> None:
    rt: Optional[Runtime] = app.extensions.get(EXTENSION)
    if rt is not None:
        rt.close()

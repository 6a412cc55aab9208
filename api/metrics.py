"""``GET /metrics``: Prometheus text exposition of the API processes.

Families (``streamrank_`` prefix):

=======================================  ==================================================================
``http_request_duration_seconds``        histogram by ``route``, ``method``, ``status`` (every request)
``recommend_answers_total``              counter by ``model`` (ranker / gbdt / popularity) and ``degraded``
                                         (``no`` or the reason's kind: ``model_failed_to_load``,
                                         ``feature_store``, ``no_model``, ``other``)
``active_model_info``                    gauge = 1 by ``name``, ``version`` of what each process serves
``snapshot_age_seconds``                 gauge: age of the candidate feature snapshot (max over processes)
``journal_backlog_impressions``          gauge: impressions journaled, not yet in the event log (sum)
``impressions_dropped_total``            counter: impressions dropped by a full journal
=======================================  ==================================================================

Under gunicorn every worker is a process: ``api/gunicorn_conf.py`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the workers start (prometheus_client's
multiprocess mode), and ``/metrics`` on any worker aggregates all of them. Without it (Flask's
dev server, tests) the process's own registry is exposed. No key is needed: the families carry
counts and model versions, no user data.
"""
from __future__ import annotations

import os

from flask import Blueprint, Response

from .openapi import document, text_responses
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess, values)

bp = Blueprint("metrics", __name__)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_SECONDS = Histogram("streamrank_http_request_duration_seconds", "HTTP request duration",
                            ["route", "method", "status"], buckets=_BUCKETS)
ANSWERS = Counter("streamrank_recommend_answers_total", "recommend answers by model and degradation",
                  ["model", "degraded"])
ACTIVE_MODEL = Gauge("streamrank_active_model_info", "the model version a process serves (1)",
                     ["name", "version"], multiprocess_mode="liveall")
SNAPSHOT_AGE = Gauge("streamrank_snapshot_age_seconds", "age of the candidate feature snapshot",
                     multiprocess_mode="max")
JOURNAL_BACKLOG = Gauge("streamrank_journal_backlog_impressions",
                        "impressions journaled and not yet in the event log", multiprocess_mode="livesum")
DROPPED = Counter("streamrank_impressions_dropped_total", "impressions dropped because the journal was full")


def degraded_kind(reason) -> str:
    if not reason:
        return "no"
    r = str(reason)
    if "failed to load" in r or "failed to score" in r:
        return "model_failed"
    if "feature store" in r or "user features" in r:
        return "feature_store"
    if "no active" in r or "registry" in r:
        return "no_model"
    return "other"


def observe_answer(model: dict) -> None:
    """Count one recommend answer (its ``model`` object) and note what this process serves."""
    name = model.get("name") or "popularity"
    ANSWERS.labels(name, degraded_kind(model.get("degraded") or (model.get("reason") if model.get("fallback")
                                                                 else None))).inc()
    key = (name, str(model.get("version")))
    if getattr(observe_answer, "_last", None) != key:
        last = getattr(observe_answer, "_last", None)
        if last is not None:
            try:
                ACTIVE_MODEL.remove(*last)
            except KeyError:
                pass
        ACTIVE_MODEL.labels(*key).set(1)
        observe_answer._last = key


def observe_request(rt, route: str, method: str, status: int, seconds: float) -> None:
    """After every request (api.requestlog): its duration, and this process's gauges (each
    process writes its own values; /metrics on any one aggregates them)."""
    REQUEST_SECONDS.labels(route, method, str(status)).observe(seconds)
    snap = rt._snapshot
    if snap is not None and snap._state is not None:
        SNAPSHOT_AGE.set(snap._state.age_s())
    journal = rt._journal
    if journal is not None:
        JOURNAL_BACKLOG.set(journal.backlog)


# Multiprocess mode is what prometheus_client chose when it was imported (the environment then),
# not the variable now: Feast sets PROMETHEUS_MULTIPROC_DIR to a folder of its own when it is
# imported, after our metrics already live in this process's memory.
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if values.ValueClass is not values.MutexValue else None


@bp.get("/metrics")
@document(resp=text_responses(), tags=["health"])
def metrics():
    """Prometheus text format: request durations, answers by model, jobs, backlogs (all workers)."""
    if _MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=_MULTIPROC_DIR)
    else:
        from prometheus_client import REGISTRY as registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

"""Prometheus metrics of a Celery worker: task durations, failures, retries, real-time push lag.

Families (``streamrank_`` prefix): ``task_duration_seconds`` (histogram by ``task`` and
``state`` = success / failure), ``task_failures_total`` and ``task_retries_total`` (by ``task``),
``push_lag_seconds`` (histogram: from the newest pushed event's time to the end of its push).

Exposed over HTTP when ``STREAMRANK_WORKER_METRICS_PORT`` is set: each worker process serves
``/metrics`` on the first free port from it (port, port + 1, ... for several workers on one host;
the port taken is logged). Wired to Celery's task signals in :mod:`workers.celery_app`.
"""
from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

TASK_SECONDS = Histogram("streamrank_task_duration_seconds", "Celery task duration", ["task", "state"],
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
FAILURES = Counter("streamrank_task_failures_total", "Celery tasks that raised", ["task"])
RETRIES = Counter("streamrank_task_retries_total", "Celery task retries", ["task"])
PUSH_LAG = Histogram("streamrank_push_lag_seconds", "newest pushed event -> its push landed",
                     buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))

_started: dict = {}                 # task id -> perf_counter at prerun
_lock = threading.Lock()


def task_started(task_id: str) -> None:
    with _lock:
        _started[task_id] = time.perf_counter()


def task_finished(task_id: str, task_name: str, state: str) -> None:
    with _lock:
        t0 = _started.pop(task_id, None)
    if t0 is not None:
        TASK_SECONDS.labels(task_name, "success" if state == "SUCCESS" else "failure").observe(time.perf_counter() - t0)


def serve(port: int, tries: int = 16) -> int:
    """Start the /metrics server on the first free port from ``port``; returns it (0: none)."""
    for p in range(int(port), int(port) + tries):
        try:
            start_http_server(p, addr="127.0.0.1")
        except OSError:
            continue
        log.info("worker metrics on http://127.0.0.1:%d/metrics", p)
        return p
    log.warning("worker metrics: no free port in %d..%d", port, port + tries - 1)
    return 0

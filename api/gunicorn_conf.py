"""gunicorn hooks of ``streamrank serve`` (``--config python:api.gunicorn_conf``): prometheus_client's
multiprocess mode, so that ``/metrics`` on any worker reports all of them.

The master points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder of its own before it forks the
workers (removed when it exits), and marks each worker that exits as dead (its live gauges leave
the aggregate). Each worker is warmed up (api/warmup.py) before it accepts a connection.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

worker_class = "api.gunicorn_worker.ThreadWorker"


def on_starting(server):
    # always a folder of our own: an inherited PROMETHEUS_MULTIPROC_DIR may be another program's
    # live one (Feast sets one in every process that imports it) and must not be emptied
    folder = tempfile.mkdtemp(prefix="streamrank-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder


def on_exit(server):
    shutil.rmtree(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""), ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # runs in the worker after the app is loaded and before it accepts: the first request it takes
    # finds the stores open, the models loaded and torch warm
    from api.warmup import enabled, warm_up
    if enabled():
        worker.log.info("warm-up %s", json.dumps(warm_up(worker.wsgi)))

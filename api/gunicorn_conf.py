"""gunicorn hooks of ``streamrank serve`` (``--config python:api.gunicorn_conf``): prometheus_client's
multiprocess mode, so that ``/metrics`` on any worker reports all of them.

The master points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before it forks the workers (a
folder you set is emptied: its files describe processes of an earlier run), and marks each
worker that exits as dead (its live gauges leave the aggregate).
"""
from __future__ import annotations

import os
import shutil
import tempfile

worker_class = "api.gunicorn_worker.ThreadWorker"


def on_starting(server):
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="streamrank-metrics-")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)

"""Liveness and readiness.

``GET /healthz``: the process answers (no I/O, always 200).
``GET /readyz``: the event database answers ``SELECT 1`` and the Feast online store answers a
one-row read, each within ``READY_TIMEOUT_S`` (3 s); 200 ``{"status": "ready", "checks": ...}`` or 503 ``{"error": "not_ready", ...}``.
"""
from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, current_app, jsonify

from .auth import has_api_key
from .errors import error_response
from .openapi import document, responses
from .schemas import ErrorBody, Health, Ready
from .runtime import get_runtime

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@document(resp=responses(Health), tags=["health"])
def healthz():
    """The process answers (no I/O)."""
    return jsonify(status="ok")


def _timed(fn, timeout_s: float) -> dict:
    """Run one check in a daemon thread; a check slower than ``timeout_s`` counts as failed (a
    probe must answer fast even when a backend hangs or retries)."""
    box: dict = {}

    def run():
        try:
            fn()
            box["ok"] = True
        except Exception as exc:
            box["error"] = exc

    t0 = time.perf_counter()
    worker = threading.Thread(target=run, name="streamrank-readyz", daemon=True)
    worker.start()
    worker.join(timeout_s)
    ms = round((time.perf_counter() - t0) * 1000, 1)
    if box.get("ok"):
        return {"ok": True, "ms": ms}
    if "error" in box:
        exc = box["error"]
        log.warning("readiness check failed: %s: %s", type(exc).__name__, exc)
        return {"ok": False, "ms": ms, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": False, "ms": ms, "detail": f"no answer within {timeout_s:g} s"}


def check_database(settings) -> None:
    from sqlalchemy import text

    from store.db import get_engine
    with get_engine(settings.database_url).connect() as conn:
        conn.execute(text("SELECT 1")).scalar()


def check_feature_store(runtime) -> None:
    lock = runtime.feast_lock
    if hasattr(lock, "acquire"):
        if not lock.acquire(timeout=30):
            raise TimeoutError("feature store reads are stuck")
        try:
            runtime.online.stream_rows([0])      # registry + online store round trip (one key)
        finally:
            lock.release()
    else:
        runtime.online.stream_rows([0])


@bp.get("/readyz")
@document(resp=responses(Ready, HTTP_503=ErrorBody), tags=["health"])
def readyz():
    """The event database and the feature store answer (503 when not); details with the API key."""
    rt = get_runtime()
    settings = current_app.config["SETTINGS"]
    timeout = current_app.config.get("READY_TIMEOUT_S", 3.0)
    checks = {"database": _timed(lambda: check_database(settings), timeout),
              "feature_store": _timed(lambda: check_feature_store(rt), timeout)}
    # the journal starts with the first readiness probe: a restarted API drains what a killed one
    # left before it takes traffic
    extra = {"journal": rt.journal.info()}
    if rt._snapshot is not None:
        extra["snapshot"] = rt._snapshot.info()
    if rt._models is not None:
        extra["model"] = rt._models.info()
    if rt._ranker is not None:
        extra["ranker"] = rt._ranker.info()
    if rt._retrieval is not None:
        extra["retrieval"] = rt._retrieval.info()
    if not has_api_key():
        # without the key (a load balancer's probe): up or not and which check failed, no error
        # texts, paths or versions
        checks = {name: {"ok": c["ok"]} for name, c in checks.items()}
        extra = {}
    failed = [name for name, c in checks.items() if not c["ok"]]
    if failed:
        return error_response(503, "not_ready", f"unreachable: {', '.join(failed)}", checks=checks, **extra)
    return jsonify(status="ready", checks=checks, **extra)

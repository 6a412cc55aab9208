"""Request ids and the request log: one JSON line per request.

Every request gets an id: the client's ``X-Request-Id`` when it sends one (1–64 characters of
``A–Z a–z 0–9 . _ -``; anything else is a 400), else a new uuid4 hex. The answer echoes it in
``X-Request-Id``, and ``POST /v1/recommend`` uses it as its ``request_id`` — so the impression
ids of a retried request (same id) are the same events, written once.

After each request the logger ``streamrank.requests`` writes one JSON object per line (to
stderr unless the application configured that logger): ``ts``, ``request_id``, ``method``,
``route`` (the URL rule, e.g. ``/v1/recommend``; the path when no rule matched), ``status``,
``ms``, and for recommend ``model`` (``name:version``) and ``degraded`` (why the answer is not
the active model's, or null).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from flask import Flask, g, request

from .errors import bad_request
from .metrics import observe_request
from .runtime import get_runtime

log = logging.getLogger("streamrank.requests")

HEADER = "X-Request-Id"
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id() -> str:
    """This request's id (see the module docstring)."""
    rid = getattr(g, "request_id", None)
    if rid is None:
        rid = g.request_id = uuid.uuid4().hex
    return rid


def note(**fields) -> None:
    """Add fields (model, degraded, ...) to this request's log line."""
    g.setdefault("log_fields", {}).update(fields)


def _configure() -> None:
    if not log.handlers:                 # the application's own logging config wins
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def register(app: Flask) -> None:
    _configure()

    @app.before_request
    def _start():
        g.request_t0 = time.perf_counter()
        sent = request.headers.get(HEADER)
        if sent is not None:
            if not _VALID.match(sent):
                g.request_id = uuid.uuid4().hex          # the error answer still gets an id
                raise bad_request(f"{HEADER} must be 1-64 characters of A-Z a-z 0-9 . _ - "
                                  f"(got {len(sent)} characters)", code="invalid_header")
            g.request_id = sent

    @app.after_request
    def _finish(resp):
        rid = request_id()
        resp.headers[HEADER] = rid
        t0 = getattr(g, "request_t0", None)
        line = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "request_id": rid,
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule is not None else request.path[:200],
                "status": resp.status_code,
                "ms": round((time.perf_counter() - t0) * 1000, 2) if t0 is not None else None}
        line.update(getattr(g, "log_fields", {}))
        log.info(json.dumps(line, ensure_ascii=True, default=str))
        if t0 is not None:
            observe_request(get_runtime(), line["route"], request.method, resp.status_code,
                            time.perf_counter() - t0)
        return resp

"""Warm a fresh API worker up before it takes traffic (gunicorn's ``post_worker_init``, see
api/gunicorn_conf.py).

A cold worker creates everything on its first requests: Feast's registry and the direct readers,
the candidate snapshot, the model artifacts (LightGBM, the ranker's torch modules, the retrieval
two-tower and its live index), torch's first
forward — measured on the landed code, its first ``/readyz`` was a 503 for ~3 s (a check past its
timeout) and its first recommend took up to 8 s. :func:`warm_up` does that work once, in order,
before gunicorn lets the worker accept: open the stores, read the snapshot, load the active
models, score one request for a cold-start user through the model path (nothing is logged: no
impression, no event) and start the impression journal (which drains what a killed worker left).

It never stops a worker from starting: a failing step is logged and the worker serves as it
would have (lazily, with the usual fallbacks). ``STREAMRANK_WARMUP=0`` turns it off.
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone

log = logging.getLogger("streamrank.warmup")

WARM_USER = 0                   # any id: an unknown user is a cold start, scored like any other
WARM_CANDIDATES = 200


def enabled() -> bool:
    return os.environ.get("STREAMRANK_WARMUP", "1").strip().lower() not in ("0", "false", "no", "off")


def warm_up(app) -> dict:
    """Run the warm-up steps in ``app``'s context; ``{"ms": {step: ms}, "errors": {step: text},
    "model": name:version or None}`` (also logged as one JSON line)."""
    from .recommend import StoreUnreadable, _score, _Timer
    from .runtime import get_runtime
    out: dict = {"ms": {}, "errors": {}, "model": None}
    t_all = time.perf_counter()

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:            # the worker starts anyway; the request path has fallbacks
            out["errors"][name] = f"{type(exc).__name__}: {exc}"[:300]
            return None
        finally:
            out["ms"][name] = round((time.perf_counter() - t0) * 1000, 1)

    with app.app_context():
        rt = get_runtime()
        step("feature_store", lambda: rt.online.stream_rows([0]))
        snapshot = step("snapshot", lambda: rt.snapshot)
        ranker = step("ranker", lambda: rt.ranker.get()[0])
        gbdt = step("gbdt", lambda: rt.models.get()[0])
        model = ranker or gbdt
        step("retrieval", lambda: rt.retrieval.current())

        def score():
            cands = snapshot.live_ids()[:WARM_CANDIDATES]
            if not cands:
                return None
            stream_df, categories, _ = snapshot.rows(cands)
            try:
                scores, why = _score(rt, model, WARM_USER, cands, stream_df, categories,
                                     datetime.now(timezone.utc), _Timer(), "live_tab")
            except StoreUnreadable as exc:
                raise RuntimeError(str(exc)) from None
            if scores is None:
                raise RuntimeError(why)
            out["model"] = f"{model.name}:{model.version}"
        if model is not None and snapshot is not None:
            step("score", score)
        step("journal", lambda: rt.journal)
    out["ms"]["total"] = round((time.perf_counter() - t_all) * 1000, 1)
    log.info(json.dumps({"event": "warm_up", "pid": os.getpid(), **out}))
    return out

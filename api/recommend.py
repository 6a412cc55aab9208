"""``POST /v1/recommend``: rank candidate streams for a user and log the impressions.

Request (JSON object; other fields are rejected)::

    user_id     int >= 0, required (an unknown user is a cold start, not an error)
    candidates  [int stream ids], optional, 1..1000 unique catalog streams (unknown ids -> 400
                naming them); default: the streams live now (the MAX_CANDIDATES = 1000 most
                popular of them when more are live)
    k           int 1..200, default 20
    page        str 1..32 chars, default "live_tab"

Answer (200)::

    {"request_id", "user_id", "page", "model": {"name": "ranker" or "gbdt", "version": "..."}
                                   or {"name": "popularity", "version": null, "fallback": true, "reason": ...},
     "items": [{"stream_id", "score", "position"}, ...]}      # position 1 = top

Scoring: stream-side features from the in-process snapshot (api.snapshot), the user's rows read
from Feast's online store per request (OnlineFeatures.user_columns, feature_repo.direct), joined by
feature_repo.online.assemble_columns into FEATURE_COLUMNS (+ the list columns; arrays, the same
rules as training's pandas path), scored by the active transformer ranker
(ranking.scorer.RankerScorer: Biasnet removed, objectives fused with the page's weights) or, when no
ranker version is active, the active GBDT (api.scoring, both hot-swapped). Without a model (or when
the user's features cannot be read) the list is ordered by popularity (7-day clicks) and the answer
says so. The ``Server-Timing`` header gives the phases in ms (parse, candidates, registry, user,
assemble, score, log; with the ranker also its sub-phases inputs, model and transformer). Every returned item
is logged as an ``impression`` event (event_id ``imp-<request_id>-<position>``): appended to the
local impression journal before the answer and drained into the event log in batches
(api.journal; ``"impressions": {"journaled": true, "count": n}`` in the answer, or
``{"journaled": false, "dropped": n, "reason": ...}`` when the journal's backlog is full).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import numpy as np
from flask import Blueprint, current_app, jsonify

from .auth import require_api_key
from .errors import ApiError, bad_request, json_body
from . import requestlog
from .metrics import DROPPED, observe_answer
from .openapi import document, responses
from .runtime import get_runtime
from .schemas import ErrorBody, RecommendAnswer, RecommendRequest, parse
from .snapshot import popularity

log = logging.getLogger(__name__)

bp = Blueprint("recommend", __name__, url_prefix="/v1")

def parse_request(body) -> dict:
    """The request validated by api.schemas.RecommendRequest (400 in the API's shape when not);
    ``MAX_K`` / ``MAX_CANDIDATES`` of the app's config may lower the schema's limits."""
    req = parse(RecommendRequest, body)
    cfg = current_app.config
    if req.k > cfg["MAX_K"]:
        raise bad_request(f"k must be between 1 and {cfg['MAX_K']}, got {req.k}", code="invalid_field")
    if req.candidates is not None and len(req.candidates) > cfg["MAX_CANDIDATES"]:
        raise bad_request(f"candidates must hold 1 to {cfg['MAX_CANDIDATES']} stream ids, got "
                          f"{len(req.candidates)}", code="invalid_field")
    return {"user_id": req.user_id, "candidates": req.candidates, "k": req.k, "page": req.page}


def _retrieve(rt, user_id: int, live, now) -> tuple[list, list, str] | None:
    """The retrieval channels' candidates (api.retrieval), or None: no active two-tower, or it
    failed (logged; the request goes on with every live stream, as without retrieval)."""
    if rt.store_breaker.open_reason():
        return None
    try:
        return rt.retrieval.candidates(rt.online, user_id, live, now.timestamp())
    except Exception as exc:
        log.error("retrieval failed for user %s (every live stream is a candidate): %s: %s", user_id,
                  type(exc).__name__, exc)
        return None


class StoreUnreadable(Exception):
    """The user's rows could not be read from the online store (no model can score)."""


def _score(rt, model, user_id: int, cands: list, stream_df, categories, now, timer, page: str
           ) -> tuple[np.ndarray, str | None]:
    """Model scores, or (None, reason) when the model path cannot run; raises StoreUnreadable
    when the user's rows cannot be read (any model would fail the same way)."""
    from feature_repo.online import assemble_columns
    try:
        skip = rt.store_breaker.open_reason()
        if skip:
            raise StoreUnreadable(skip)
        try:
            with rt.feast_lock:
                user_cols = rt.online.user_columns(user_id, cands, categories)
        except Exception as exc:
            rt.store_breaker.failed(exc)
            log.error("user features unavailable for user %s: %s: %s", user_id, type(exc).__name__, exc)
            raise StoreUnreadable(f"user features unavailable ({type(exc).__name__}: {str(exc)[:120]})") from exc
        rt.store_breaker.ok()
    finally:
        timer.lap("user")
    try:
        frame = assemble_columns(user_cols, stream_df, now)      # numpy, not pandas: ~1 ms, not ~20
        timer.lap("assemble")
        scores = model.predict(frame, page=page)
        for name, ms in (getattr(model.model, "last_timing", None) or {}).items():
            timer.add(name.removesuffix("_ms"), ms)        # the ranker's inputs / model / transformer
        return scores, None
    except Exception as exc:
        log.exception("model %s %s failed to score", model.name, model.version)
        return None, f"model {model.name} {model.version} failed to score ({type(exc).__name__})"


def log_impressions(rt, request_id: str, user_id: int, page: str, items: list, now, model_version: str,
                    policy: str = "ranked") -> dict:
    """Journal the answer's impressions (api.journal: on local disk before the answer, in the
    event log within ~0.2 s). A full journal drops them and the answer says so. Each carries
    its propensity, the serving policy's probability of that stream at that position (1.0: the
    slot was the deterministic ranking's), and the policy that chose it."""
    from .journal import JournalFull
    ts = now.isoformat()
    rows = [{"event_id": f"imp-{request_id}-{it['position']}", "user_id": user_id, "ts": ts,
             "type": "impression", "stream_id": it["stream_id"], "request_id": request_id,
             "position": it["position"], "page": page, "propensity": it.get("propensity", 1.0),
             "policy": it.get("policy", policy)} for it in items]
    try:
        rt.journal.append(rows, model_version)
    except JournalFull as exc:
        log.error("impressions of request %s dropped: %s", request_id, exc)
        DROPPED.inc(len(rows))
        return {"journaled": False, "dropped": len(rows), "reason": str(exc)}
    return {"journaled": True, "count": len(rows)}


def _page(rt, scores: np.ndarray, k: int, stream_df, base: str, categories):
    """policy.page.build_page with the app's switches; the counters are the streams' 30-day
    impressions and clicks (batch statistics), the re-ranker's categories the catalog's."""
    from policy.page import build_page
    clicks = imps = None
    if stream_df is not None and "s_exposures_30d" in stream_df.columns and "s_clicks_30d" in stream_df.columns:
        clicks = stream_df["s_clicks_30d"].to_numpy(dtype=float, na_value=np.nan)
        imps = stream_df["s_exposures_30d"].to_numpy(dtype=float, na_value=np.nan)
    cfg = rt.page_config
    value = rt.slate_value if cfg.rerank.enabled else None
    return build_page(scores, k, cfg, np.random.default_rng(), clicks=clicks, impressions=imps, base=base,
                      categories=categories, slot_value=value), value


class _Timer:
    """Phase durations, sent back as a ``Server-Timing`` header (ms) for dashboards and the bench."""

    def __init__(self):
        self.t = time.perf_counter()
        self.phases: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases.append((name, (now - self.t) * 1000))
        self.t = now

    def add(self, name: str, ms: float) -> None:
        """A sub-phase measured elsewhere (not a lap: the clock is not moved)."""
        self.phases.append((name, ms))

    def header(self) -> str:
        return ", ".join(f"{n};dur={d:.2f}" for n, d in self.phases)


def _answer(body: dict, timer: _Timer):
    resp = jsonify(body)
    resp.headers["Server-Timing"] = timer.header()
    return resp


@bp.post("/recommend")
@document(json=RecommendRequest, resp=responses(RecommendAnswer, body=True, keyed=True, HTTP_503=ErrorBody),
          tags=["recommend"], keyed=True)
@require_api_key
def recommend():
    """Rank live streams for a user and log them as impressions.

    Default candidates: the streams live now. The answer names the model that ranked (or the
    popularity fallback and why); ``Server-Timing`` gives the phases in ms."""
    timer = _Timer()
    req = parse_request(json_body())
    timer.lap("parse")
    rt = get_runtime()
    request_id = requestlog.request_id()          # the client's X-Request-Id, or a new one
    now = datetime.now(timezone.utc)
    user_id, k, page_name = req["user_id"], req["k"], req["page"]

    sources = retrieval_version = None
    try:
        snapshot = rt.snapshot
        cands = req["candidates"]
        if cands is None:
            # the live streams: the retrieval channels' <= 200 when a two-tower is active, else every
            # live stream (the most popular MAX_CANDIDATES when more are live); either way only the
            # chosen streams' rows are read, so the cost does not grow with the number live
            live = snapshot.live()
            got = None
            if len(live) and current_app.config.get("SERVE_RETRIEVAL", True):
                got = _retrieve(rt, user_id, live, now)
            if got is not None:
                cands, sources, retrieval_version = got
            else:
                cands = live.capped(current_app.config["MAX_CANDIDATES"])
        timer.lap("retrieval")
        stream_df, categories, unknown = snapshot.rows(cands) if cands else (None, [], [])
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError
        log.exception("candidates unavailable")
        if isinstance(exc, SQLAlchemyError):
            raise ApiError(503, "database_unavailable", "the live streams could not be read; retry") from None
        raise ApiError(503, "feature_store_unavailable",
                       f"candidate features could not be read ({type(exc).__name__}); retry") from None
    if unknown:
        raise bad_request(f"unknown stream id(s) {unknown[:20]}{' ...' if len(unknown) > 20 else ''} "
                          f"(not in the catalog)", code="unknown_streams", unknown_stream_ids=unknown[:1000])
    timer.lap("candidates")

    # the transformer ranker when a version is active, else V1 (GBDT), else popularity
    serve_ranker = current_app.config.get("SERVE_RANKER", True)
    model, reason = rt.ranker.get() if serve_ranker else (None, None)
    degraded = rt.ranker.failing if serve_ranker else None   # the active ranker could not be loaded
    if model is None:
        model, reason = rt.models.get()
        degraded = degraded or rt.models.failing
    timer.lap("registry")
    answer = {"request_id": request_id, "user_id": user_id, "page": page_name}
    if not cands:
        answer["model"] = model.describe() if model is not None else dict(
            {"name": "popularity", "version": None, "fallback": True}, reason=reason)
        answer["items"] = []
        answer["reason"] = "no live streams right now and no candidates given"
        return _answer(answer, timer)

    scores = None
    store_down = None
    if model is not None:
        try:
            scores, reason = _score(rt, model, user_id, cands, stream_df, categories, now, timer, page_name)
            if scores is None and model.name == "ranker":          # the ranker failed: V1 before popularity
                fallback, _ = rt.models.get()
                if fallback is not None:
                    scores, why = _score(rt, fallback, user_id, cands, stream_df, categories, now, timer, page_name)
                    if scores is not None:
                        model = fallback
                        reason = None
        except StoreUnreadable as exc:
            reason = store_down = str(exc)
    if scores is None:
        scores = popularity(stream_df)
        answer["model"] = {"name": "popularity", "version": None, "fallback": True, "reason": reason}
        if store_down:
            answer["model"]["degraded"] = store_down
        model_version = "popularity"
    else:
        answer["model"] = model.describe()
        model_version = f"{model.name}:{model.version}"[:64]
    if degraded:                    # serving an older version or V1 because the active one is broken
        answer["model"]["degraded"] = degraded
    requestlog.note(model=model_version, degraded=answer["model"].get("degraded") or
                    (answer["model"].get("reason") if answer["model"].get("fallback") else None))
    observe_answer(answer["model"])
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    # best first (ties keep the candidates' order), then the page policy: cold-stream exploration
    # or, on a share of requests, the top-K randomised; every slot keeps its propensity
    base = "popularity" if model_version == "popularity" else "ranked"
    page, slate_value = _page(rt, scores, k, stream_df, base, categories)
    order = page.index
    items = []
    for pos, (i, prop, pol) in enumerate(zip(order, page.propensity, page.policy), start=1):
        it = {"stream_id": int(cands[i]), "score": float(scores[i]) if np.isfinite(scores[i]) else None,
              "position": pos}
        if pol in ("explore", "randomised"):
            it["policy"] = pol
        if prop < 1.0:
            it["propensity"] = round(float(prop), 6)
        items.append(it)
    if page.reranked:
        answer["rerank"] = {"slot_value": "slate_model" if slate_value is not None else "scores",
                            "relaxed": page.relaxed}
    if sources is not None:               # which retrieval channel brought each item
        for it, i in zip(items, order):
            it["source"] = sources[i]
        answer["retrieval"] = {"version": retrieval_version, "candidates": len(cands)}
    timer.lap("score")
    answer["impressions"] = log_impressions(rt, request_id, user_id, page_name, items, now, model_version,
                                            policy=base)
    timer.lap("log")
    answer["items"] = items
    return _answer(answer, timer)

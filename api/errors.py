"""JSON errors for every 4xx / 5xx, and the request-body helpers that raise them.

Every error answer is ``{"error": <short code>, "detail": <human message>}`` (plus optional
extra keys, e.g. ``errors`` for a rejected event batch). Bad input is always a 4xx: the body is
parsed here (strict JSON: no NaN / Infinity, repeated keys, bounded size and depth); the routes
validate it with the schemas of :mod:`api.schemas` (a boolean is NOT an integer, a float is not an id).
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Optional

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)



class ApiError(Exception):
    """Raised by the routes; answered as ``{"error": code, "detail": detail, **extra}``."""

    def __init__(self, status: int, code: str, detail: str, *, headers: Optional[dict] = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def bad_request(detail: str, code: str = "bad_request", **extra) -> ApiError:
    return ApiError(400, code, detail, **extra)


def error_response(status: int, code: str, detail: str, **extra):
    body = {"error": code, "detail": detail}
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    return resp


def _code_of(exc: HTTPException) -> str:
    name = exc.name or "error"
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "error"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        resp = error_response(exc.status, exc.code, exc.detail, **exc.extra)
        resp.headers.update(exc.headers)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # 404, 405 (keeps the Allow header), 413, 415, werkzeug's own 400s, ...
        detail = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            detail = f"request body larger than {limit} bytes" if limit else detail
        resp = error_response(exc.code or 500, _code_of(exc), detail)
        for key, value in exc.get_headers():
            if key.lower() not in ("content-type", "content-length"):
                resp.headers[key] = value
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", f"{type(exc).__name__}: the server failed to answer")


# ----------------------------------------------------------------------------- request bodies
def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _body_bytes() -> bytes:
    """The request body; 413 beyond MAX_CONTENT_LENGTH, whether the length is declared or the
    body is chunked (werkzeug's limited stream would cut a chunked body at the cap silently and
    the truncated JSON answer 400)."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if request.content_length is None and limit and request.environ.get("wsgi.input_terminated"):
        if "streamrank.body" not in request.environ:
            raw = request.environ["wsgi.input"].read(limit + 1)
            if len(raw) > limit:
                raise RequestEntityTooLarge()
            request.environ["streamrank.body"] = raw
        return request.environ["streamrank.body"]
    return request.get_data(cache=True)      # raises 413 beyond MAX_CONTENT_LENGTH


def _unique_keys(pairs: list) -> dict:
    # json's default keeps the last of repeated keys: {"user_id": 1, "user_id": 2} would be
    # answered for user 2 without a word; say so instead
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r} in an object")
        out[key] = value
    return out


def json_body() -> Any:
    """The request's JSON document (any type). 415 unless the body is declared JSON; 400 when
    it is empty, not UTF-8, not strict JSON (NaN/Infinity rejected), repeats a key inside an
    object, or is nested too deeply."""
    if not request.is_json:
        ctype = request.headers.get("Content-Type") or "none"
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json (got Content-Type: {ctype[:80]})")
    raw = _body_bytes()
    if not raw.strip():
        raise bad_request("the request body is empty: send a JSON document", code="invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the request body is not UTF-8", code="invalid_json") from None
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                          code="invalid_json") from None
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {str(exc)[:200] or 'nested too deeply'}", code="invalid_json") from None


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction" if not float(value).is_integer() else "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def text_problem(value: str) -> Optional[str]:
    """Why a string cannot be stored as text (None when it can): NUL bytes, lone surrogates."""
    from store.ingest import text_problem as _problem
    return _problem(value)

"""API-key check of the write routes."""
from __future__ import annotations

import hmac
from functools import wraps
from typing import Optional

from flask import current_app, request

from .errors import ApiError


def has_api_key() -> bool:
    """True when no key is configured or the request carries the right one."""
    key: Optional[str] = current_app.config["SETTINGS"].api_key
    if not key:
        return True
    given = request.headers.get("X-API-Key", "")
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8"))


def require_api_key(view):
    """401 JSON unless ``X-API-Key`` equals ``settings.api_key`` (when one is configured)."""
    @wraps(view)
    def wrapped(*args, **kwargs):
        key: Optional[str] = current_app.config["SETTINGS"].api_key
        if key:
            given = request.headers.get("X-API-Key", "")
            if not given:
                raise ApiError(401, "unauthorized", "this route needs the X-API-Key header")
            if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8")):
                raise ApiError(401, "unauthorized", "invalid API key")
        return view(*args, **kwargs)
    return wrapped

"""``GET /v1/models[?name=gbdt]``: the model registry, newest first, and the active version per name.
Needs ``X-API-Key`` when a key is configured (it shows artifact paths and metrics)."""
from __future__ import annotations

import math

from flask import Blueprint, current_app, jsonify, request

from .auth import require_api_key
from .errors import bad_request, str_field

bp = Blueprint("models", __name__, url_prefix="/v1")

QUERY_ARGS = {"name"}


@bp.get("/models")
@require_api_key        # artifact paths and metrics are for operators, not for anyone who can reach the port
def list_models():
    from store.registry import list_models as registry_list
    unknown = sorted(set(request.args) - QUERY_ARGS)
    if unknown:
        raise bad_request(f"unknown query parameter(s) {', '.join(repr(u[:40]) for u in unknown[:10])}; "
                          f"allowed: name", code="unknown_field")
    name = request.args.get("name")
    if name is not None:
        name = str_field("name", name, max_len=64)
    settings = current_app.config["SETTINGS"]
    models = registry_list(settings.database_url, name)
    active = {m["name"]: m["version"] for m in models if m["status"] == "active"}
    return jsonify(models=_finite(models), active=active)


def _finite(obj):
    """NaN / inf (e.g. an undefined metric) -> null: the answer stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj

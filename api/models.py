"""``GET /v1/models[?name=gbdt]``: the model registry, newest first, and the active version per name.
Needs ``X-API-Key`` when a key is configured (it shows artifact paths and metrics)."""
from __future__ import annotations

import math

from flask import Blueprint, current_app, jsonify, request

from .auth import require_api_key
from .errors import bad_request
from .openapi import document, responses
from .schemas import ModelsAnswer, ModelsQuery, parse

bp = Blueprint("models", __name__, url_prefix="/v1")


@bp.get("/models")
@document(query=ModelsQuery, resp=responses(ModelsAnswer, keyed=True), tags=["models"], keyed=True)
@require_api_key        # artifact paths and metrics are for operators, not for anyone who can reach the port
def list_models():
    """The model registry, newest first, and the active version of each name."""
    from store.registry import list_models as registry_list
    repeated = sorted(k for k, v in request.args.lists() if len(v) > 1)
    if repeated:
        raise bad_request(f"query parameter(s) given more than once: {', '.join(repr(r[:40]) for r in repeated)}",
                          code="invalid_field")
    name = parse(ModelsQuery, request.args.to_dict()).name
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

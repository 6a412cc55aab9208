"""The StreamRank HTTP API (Flask application factory).

``create_app(settings=None, **overrides)`` is the only entry: ``Settings.from_env(**overrides)``
when no settings are given, so ``gunicorn 'api:create_app()'`` runs on the environment alone
(gunicorn 27: add ``--no-control-socket`` or ``--control-socket PATH``). Blueprints, one per
concern:

=====================  =========================================================================
``POST /v1/recommend``  api.recommend: ``{user_id, candidates?, k?, page?}`` -> ranked streams,
                        the model (or the popularity fallback and why); logs the impressions
``POST /v1/events``     api.events: <= 1000 events, validated, answered after commit; enqueues the
                        real-time push
``GET /v1/models``      api.models: the model registry
``GET /healthz``        api.health: the process is up (no I/O)
``GET /readyz``         api.health: database and feature store reachable (503 when not)
``GET /metrics``        api.metrics: Prometheus families (all gunicorn workers aggregated)
``GET /openapi.json``   api.openapi: the OpenAPI 3.1 document (from api.schemas); ``/docs``: Swagger UI
=====================  =========================================================================

Every error is JSON ``{"error": code, "detail": message}``. Write routes (``/v1/events`` and
``/v1/recommend``, which writes impressions) need ``X-API-Key: <settings.api_key>`` when a key is
configured. Unknown JSON fields are REJECTED (400 ``unknown_field``), never silently ignored.

Nothing heavy is imported here: Feast, LightGBM and the Celery app are created lazily by the first
request that needs them (:mod:`api.runtime`) and torn down by :func:`close_app`.
"""
from __future__ import annotations

import atexit
import logging
import weakref

from flask import Flask

from .auth import require_api_key
from .errors import register_error_handlers
from .runtime import EXTENSION, Runtime, close_app, get_runtime

__all__ = ["create_app", "close_app", "get_runtime", "require_api_key"]

log = logging.getLogger(__name__)



def create_app(settings=None, **overrides) -> Flask:
    """Build the API for ``settings`` (default: ``Settings.from_env(**overrides)``)."""
    from store.settings import Settings
    if settings is None:
        settings = Settings.from_env(**overrides)
    elif overrides:
        settings = settings.with_(**overrides)

    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,   # 1 MiB: a 1,000-event batch is ~200 KB
        MAX_EVENTS=1000,              # per POST /v1/events
        MAX_CANDIDATES=1000,          # per POST /v1/recommend
        MAX_K=200,
        MODEL_CHECK_S=2.0,            # registry polled at most this often for a new active model
        SNAPSHOT_BACKGROUND=True,     # refresh thread for the candidate feature snapshot
        SERVE_RANKER=True,            # serve the transformer ranker when a version is active (else V1)
        SNAPSHOT_INTERVAL_S=None,     # None: settings.snapshot_interval_s
        BROKER_TIMEOUT_S=2.0,
        READY_TIMEOUT_S=3.0,          # each /readyz check
    )
    # werkzeug answers "//v1/models" with a 308 redirect whose body is HTML (routing redirects
    # bypass the error handlers): an unknown path is a JSON 404 like any other
    app.url_map.merge_slashes = False
    app.json.sort_keys = False
    app.json.compact = True
    app.extensions[EXTENSION] = Runtime(settings, app.config)

    register_error_handlers(app)
    from . import requestlog
    requestlog.register(app)
    from . import events, health, metrics, models, openapi, recommend
    app.register_blueprint(openapi.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(recommend.bp)
    app.register_blueprint(events.bp)

    ref = weakref.ref(app)
    atexit.register(lambda: ref() is not None and close_app(ref()))
    return app

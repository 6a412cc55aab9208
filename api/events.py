"""``POST /v1/events``: a batch of events into the log, then the real-time push is enqueued.

Body: ``{"events": [event, ...]}`` or the bare list; at most ``MAX_EVENTS`` (1000) events
(413 ``too_many_events`` beyond), each an object with the fields of ``store.ingest.EVENT_COLUMNS``
(unknown fields are rejected). The batch is validated and written by ``store.ingest.ingest_events``
in ONE transaction: any bad row -> 400 ``invalid_events`` with ``errors: [{row, field, reason}]``
(rows are 0-based positions in the batch) and nothing written. The answer (200) comes only after
the commit: ``{"received", "inserted", "duplicates", "push_enqueued"}``; re-sent event ids are
no-ops counted in ``duplicates``.

The newly inserted event ids are then sent to Celery (``streamrank.push_realtime``). A broker that
is down never fails the request: the events are committed, the error is logged and the answer says
``"push_enqueued": false`` (the hourly statistics still see the events).
"""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify

from .auth import require_api_key
from .errors import ApiError, bad_request, json_body, json_type
from .openapi import document, responses
from .runtime import get_runtime
from .schemas import ErrorBody, EventBatch, EventsAnswer

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__, url_prefix="/v1")

PUSH_TASK = "streamrank.push_realtime"
MAX_LISTED_ERRORS = 1000


def _batch(body) -> list:
    if isinstance(body, dict):
        unknown = sorted(k for k in body if k != "events")
        if unknown:
            raise bad_request(f"unknown field(s) {', '.join(repr(k[:40]) for k in unknown[:10])}; "
                              f"send {{\"events\": [...]}} or a JSON array", code="unknown_field")
        if "events" not in body:
            raise bad_request("missing field 'events' (a JSON array of events)", code="missing_field")
        body = body["events"]
    if not isinstance(body, list):
        raise bad_request(f"events must be a JSON array, got {json_type(body)}", code="invalid_field")
    limit = current_app.config["MAX_EVENTS"]
    if len(body) > limit:
        raise ApiError(413, "too_many_events", f"at most {limit} events per request, got {len(body)}; split the batch")
    if not body:
        raise bad_request("events must not be empty", code="empty_batch")
    return body


def enqueue_push(event_ids: list, outbox_id: int | None = None) -> tuple[bool, str | None]:
    """Send the real-time push task; (True, None) or (False, why). Never raises: the batch's
    outbox row (store.outbox) has the push re-sent by a worker when this message is lost."""
    if not event_ids:
        return False, "no new events"
    try:
        get_runtime().celery.send_task(PUSH_TASK, args=[list(event_ids)], kwargs={"outbox_id": outbox_id}, retry=True,
                                       retry_policy={"max_retries": 1, "interval_start": 0,
                                                     "interval_step": 0.2, "interval_max": 0.2})
        return True, None
    except Exception as exc:
        log.error("could not enqueue %s for %d events (events are committed): %s: %s",
                  PUSH_TASK, len(event_ids), type(exc).__name__, exc)
        return False, f"broker unavailable ({type(exc).__name__}); the events are stored and a worker pushes them later"


def _out_of_range(rows: list) -> list[dict]:
    """JSON integers outside int64 (every id and count is int64); pandas would turn a column holding
    one into uint64/object and the batch must still be answered with a 400, row by row."""
    errors = []
    for i, ev in enumerate(rows):
        if isinstance(ev, dict):
            for key, value in ev.items():
                if isinstance(value, int) and not isinstance(value, bool) and not -2 ** 63 <= value < 2 ** 63:
                    errors.append({"row": i, "field": str(key)[:40], "reason": "integer out of the int64 range"})
    return errors


@bp.post("/events")
@document(json=EventBatch, resp=responses(EventsAnswer, body=True, keyed=True, HTTP_503=ErrorBody),
          tags=["events"], keyed=True)
@require_api_key
def post_events():
    """Write up to 1,000 events in one transaction (or none: 400 with every bad row), then enqueue
    their real-time push. Re-sent event ids are no-ops. The body may also be the bare array."""
    from sqlalchemy.exc import SQLAlchemyError

    from store.ingest import IngestError, ingest_events
    rows = _batch(json_body())
    settings = current_app.config["SETTINGS"]
    huge = _out_of_range(rows)
    if huge:
        head = "; ".join(f"row {e['row']}: {e['field']}: {e['reason']}" for e in huge[:20])
        raise bad_request(f"{len({e['row'] for e in huge})} bad row(s), nothing written: {head}",
                          code="invalid_events", errors=huge[:MAX_LISTED_ERRORS])
    try:
        result = ingest_events(settings.database_url, rows, return_ids=True, outbox=True)
    except IngestError as exc:
        errors = exc.as_dicts()
        raise bad_request(str(exc)[:2000], code="invalid_events", errors=errors[:MAX_LISTED_ERRORS]) from None
    except SQLAlchemyError as exc:
        log.error("event batch not written: %s", exc)
        raise ApiError(503, "database_unavailable", "the event log could not be written; retry the batch "
                       "(re-sending is safe: event ids are idempotent)", headers={"Retry-After": "5"}) from None
    pushed, why = enqueue_push(result.inserted_event_ids or [], result.outbox_id)
    body = {"received": result.received, "inserted": result.inserted, "duplicates": result.duplicates,
            "push_enqueued": pushed}
    if not pushed and result.inserted:
        body["push_detail"] = why
    return jsonify(body)

"""The real-time push outbox: no accepted event batch goes un-pushed.

``POST /v1/events`` commits the events and, in the SAME transaction, one ``push_outbox`` row
listing their ids (``store.ingest.ingest_events(..., outbox=True)``); then it enqueues the push
task with the row's id, and the task deletes the row once its push has landed (:func:`done`).
A process killed between the commit and the enqueue, a broker that refused the message, or a
worker that died mid-push leaves the row behind: every Celery worker's watchdog (and beat's
``recover-jobs``) re-sends the push of each row older than the job lease (:func:`resend_stale`).
Pushes are recomputed from the event log, so a push sent twice changes nothing.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable, Optional

from sqlalchemy import and_, delete, or_, select, update

from .db import session_scope, utcnow
from .schema import PushOutbox

log = logging.getLogger(__name__)


def done(url: str, outbox_id: Optional[int]) -> None:
    """The push of this row has landed: forget it (no-op for None or an id already gone)."""
    if outbox_id is None:
        return
    with session_scope(url) as s:
        s.execute(delete(PushOutbox).where(PushOutbox.id == int(outbox_id)))


def pending(url: str) -> list[dict]:
    with session_scope(url) as s:
        rows = s.execute(select(PushOutbox).order_by(PushOutbox.id)).scalars().all()
        return [{"id": r.id, "event_ids": list(r.event_ids), "created_at": r.created_at, "sent_at": r.sent_at}
                for r in rows]


def resend_stale(url: str, send: Callable[[list, int], None], *, older_than_s: float,
                 limit: int = 500) -> list[int]:
    """Re-send the push of every row not acknowledged ``older_than_s`` after it was last sent
    (``send(event_ids, outbox_id)``). Each row is claimed with a conditional update of its
    ``sent_at``, so workers sweeping at once send it once. Returns the re-sent row ids."""
    cutoff = utcnow() - timedelta(seconds=float(older_than_s))
    with session_scope(url) as s:
        rows = s.execute(select(PushOutbox.id, PushOutbox.sent_at, PushOutbox.event_ids)
                         .where(or_(PushOutbox.sent_at.is_(None), PushOutbox.sent_at <= cutoff))
                         .where(PushOutbox.created_at <= cutoff)
                         .order_by(PushOutbox.id).limit(limit)).all()
    out = []
    for rid, sent_at, event_ids in rows:
        same = PushOutbox.sent_at.is_(None) if sent_at is None else PushOutbox.sent_at == sent_at
        with session_scope(url) as s:
            took = s.execute(update(PushOutbox).where(and_(PushOutbox.id == rid, same))
                             .values(sent_at=utcnow())).rowcount
        if took != 1:
            continue                    # another worker claimed it
        log.warning("push of %d events (outbox %s) never acknowledged; re-sending it", len(event_ids), rid)
        send(list(event_ids), rid)
        out.append(rid)
    return out


__all__ = ["done", "pending", "resend_stale"]

"""Job runs keyed by (task, input version), held by a lease with a heartbeat.

A finished run with the same key is not redone; a run in progress elsewhere is waited for, not
duplicated; a run whose process died (kill -9, OOM, a lost machine) is noticed when its heartbeat
stops and is sent again.

- :func:`job_run` claims (task, key). The claim is a row in ``job_runs`` with ``status='running'``,
  an ``owner`` and a ``heartbeat_at`` that a thread refreshes every ``lease_s / 4`` while the work
  runs. Another caller with the same key (beat and ``streamrank pipeline`` firing the same job in
  the same hour, or a redelivered message) WAITS while that lease is fresh and then returns the
  finished run's detail (``skip``); it takes the run over only when the lease expired or the run
  failed. Take-overs are conditional updates, so exactly one caller wins.
- The Celery task that runs the job is recorded with the claim (name, id, kwargs: from
  :data:`current_task`, set by the worker around each task). :func:`recover_stale_jobs` re-sends
  the task of every run whose heartbeat is older than the lease, with the SAME task id, so whoever
  waits on that id (``streamrank pipeline``) gets the re-run's result. Every worker runs it
  periodically (workers.celery_app), so a training worker killed with -9 loses no job, on any
  broker (the embedded transports never redeliver an unacknowledged message; Redis only after its
  visibility timeout, hours).
"""
from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterator, Optional

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from .db import session_scope, utcnow
from .schema import JobRun

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0
REQUEUED = "requeued:"            # owner of a run whose task was re-sent: the re-sent task takes it

# (task name, task id, kwargs) of the Celery task running in this context (None outside a worker)
current_task: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar("streamrank_task", default=None)


class LeaseLost(RuntimeError):
    """This process no longer holds the job's lease (it was taken over): do not publish results."""


@dataclass
class JobHandle:
    task: str
    key: str
    skip: bool = False                     # True: a run with this key finished; do nothing
    detail: dict = field(default_factory=dict)
    owner: str = ""
    lost: bool = False

    def check(self) -> None:
        """Raise :class:`LeaseLost` when another process took the run over (call before publishing)."""
        if self.lost:
            raise LeaseLost(f"job {self.task} {self.key}: the lease was taken over; not publishing")


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def job_run(url: str, task: str, key: str, *, lease_s: Optional[float] = None,
            wait_s: float = 6 * 3600.0, poll_s: Optional[float] = None) -> Iterator[JobHandle]:
    """Claim (task, key); yields a handle whose ``skip`` says the work is already done.

    On success the run is marked done with ``handle.detail``; on error it is marked failed (and
    the next run with the same key redoes it). While another live process holds the key this
    waits (up to ``wait_s``) for it to finish.
    """
    lease_s = float(lease_s if lease_s is not None else lease_from_env())
    poll_s = poll_s if poll_s is not None else min(2.0, lease_s / 4)
    handle = JobHandle(task, key, owner=_owner())
    _claim(url, handle, lease_s, wait_s, poll_s)
    if handle.skip:
        yield handle
        return
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(url, handle, lease_s / 4, stop), daemon=True,
                            name=f"lease-{task}")
    beat.start()
    try:
        yield handle
    except BaseException as exc:
        stop.set()
        beat.join()
        _finish(url, handle, "failed", {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    stop.set()
    beat.join()
    _finish(url, handle, "done", handle.detail)


def lease_from_env() -> float:
    try:
        return float(os.environ.get("STREAMRANK_JOB_LEASE_S") or DEFAULT_LEASE_S)
    except ValueError:
        return DEFAULT_LEASE_S


def _select(task: str, key: str):
    return select(JobRun).where(JobRun.task == task, JobRun.key == key)


def _claim(url: str, handle: JobHandle, lease_s: float, wait_s: float, poll_s: float) -> None:
    info = current_task.get() or (None, None, None)
    name, task_id, kwargs = info
    mine = {"status": "running", "owner": handle.owner, "heartbeat_at": None, "started_at": None,
            "finished_at": None, "task_name": name, "task_id": task_id, "kwargs": kwargs}
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        now = utcnow()
        mine.update(heartbeat_at=now, started_at=now)
        with session_scope(url) as s:
            run = s.execute(_select(handle.task, handle.key)).scalar_one_or_none()
            if run is None:
                s.add(JobRun(task=handle.task, key=handle.key, **mine))
                try:
                    s.flush()
                    return
                except IntegrityError:          # claimed a moment ago by another process
                    s.rollback()
                    continue
            if run.status == "done":
                handle.skip, handle.detail = True, dict(run.detail or {})
                if waited:
                    handle.detail["waited_for_another_run"] = True
                return
            fresh = run.heartbeat_at is not None and now - run.heartbeat_at < timedelta(seconds=lease_s)
            requeued_for_me = task_id is not None and run.owner == f"{REQUEUED}{task_id}"
            if run.status == "running" and fresh and not requeued_for_me:
                pass                            # someone alive holds it: wait below
            else:                               # failed, expired, or re-sent for this very task
                took = s.execute(update(JobRun).where(JobRun.id == run.id, JobRun.status == run.status,
                                                      _same(JobRun.owner, run.owner),
                                                      _same(JobRun.heartbeat_at, run.heartbeat_at))
                                 .values(**mine)).rowcount
                if took == 1:
                    if run.status == "running":
                        log.warning("job %s %s: taking over the run of %s (heartbeat %s, lease %.0fs)",
                                    handle.task, handle.key, run.owner, run.heartbeat_at, lease_s)
                    return
                continue
        if time.monotonic() > deadline:
            handle.skip, handle.detail = True, {"claimed_elsewhere": True, "owner": run.owner}
            return
        if not waited:
            log.info("job %s %s is running in %s; waiting for it", handle.task, handle.key, run.owner)
        waited = True
        time.sleep(poll_s)


def _same(column, value):
    return column.is_(None) if value is None else column == value


def _heartbeat(url: str, handle: JobHandle, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        try:
            with session_scope(url) as s:
                n = s.execute(update(JobRun).where(JobRun.task == handle.task, JobRun.key == handle.key,
                                                   JobRun.owner == handle.owner, JobRun.status == "running")
                              .values(heartbeat_at=utcnow())).rowcount
            if n == 0:
                handle.lost = True
                log.error("job %s %s: lease lost (taken over elsewhere)", handle.task, handle.key)
                return
        except Exception as exc:                # a database hiccup: try again on the next beat
            log.warning("job %s %s: heartbeat failed: %s", handle.task, handle.key, exc)


def _finish(url: str, handle: JobHandle, status: str, detail: dict) -> None:
    with session_scope(url) as s:
        n = s.execute(update(JobRun).where(JobRun.task == handle.task, JobRun.key == handle.key,
                                           JobRun.owner == handle.owner)
                      .values(status=status, finished_at=utcnow(), detail=detail)).rowcount
    if n == 0:
        log.error("job %s %s: finished as %s but the run was taken over; result not recorded",
                  handle.task, handle.key, status)


def recover_stale_jobs(url: str, resend: Callable[[str, str, dict], None], *,
                       lease_s: Optional[float] = None) -> list[dict]:
    """Re-send the Celery task of every run whose lease expired (its process died).

    ``resend(task_name, task_id, kwargs)`` sends it (same id). The run is marked
    ``owner='requeued:<task id>'`` with a fresh heartbeat, so recoverers in other workers do not
    send it twice, and the re-sent task takes it over at once; if that message is lost too, the
    lease expires again and the next recovery re-sends it again. Returns what was re-sent.
    """
    lease_s = float(lease_s if lease_s is not None else lease_from_env())
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    out = []
    with session_scope(url) as s:
        rows = s.execute(select(JobRun).where(JobRun.status == "running", JobRun.task_name.is_not(None),
                                              JobRun.task_id.is_not(None),
                                              or_(JobRun.heartbeat_at.is_(None), JobRun.heartbeat_at < stale))
                         ).scalars().all()
        cands = [(r.id, r.task, r.key, r.owner, r.heartbeat_at, r.task_name, r.task_id, dict(r.kwargs or {}))
                 for r in rows]
    for rid, task, key, owner, hb, name, task_id, kwargs in cands:
        with session_scope(url) as s:
            took = s.execute(update(JobRun).where(and_(JobRun.id == rid, JobRun.status == "running",
                                                       _same(JobRun.owner, owner), _same(JobRun.heartbeat_at, hb)))
                             .values(owner=f"{REQUEUED}{task_id}", heartbeat_at=utcnow())).rowcount
        if took != 1:
            continue
        log.warning("job %s %s: its process stopped beating at %s (owner %s); re-sending task %s [%s]",
                    task, key, hb, owner, name, task_id)
        resend(name, task_id, kwargs)
        out.append({"task": task, "key": key, "task_name": name, "task_id": task_id, "previous_owner": owner})
    return out


def last_runs(url: str, task: Optional[str] = None, limit: int = 20) -> list[dict]:
    with session_scope(url) as s:
        q = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
        if task:
            q = q.where(JobRun.task == task)
        return [{"task": r.task, "key": r.key, "status": r.status, "started_at": r.started_at.isoformat(),
                 "finished_at": r.finished_at.isoformat() if r.finished_at else None, "detail": r.detail,
                 "owner": r.owner, "heartbeat_at": r.heartbeat_at.isoformat() if r.heartbeat_at else None,
                 "task_id": r.task_id}
                for r in s.execute(q).scalars()]

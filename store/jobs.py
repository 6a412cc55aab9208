"""Job runs keyed by (task, input version): a finished run with the same key is not redone."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .db import session_scope, utcnow
from .schema import JobRun


@dataclass
class JobHandle:
    task: str
    key: str
    skip: bool = False                     # True: an earlier run with this key finished; do nothing
    detail: dict = field(default_factory=dict)


@contextmanager
def job_run(url: str, task: str, key: str) -> Iterator[JobHandle]:
    """Claim (task, key). Yields a handle whose ``skip`` says the work is already done.

    On success the run is marked done with ``handle.detail``; on error it is marked failed
    (and will be retried by the next run with the same key).
    """
    handle = JobHandle(task, key)
    try:
        _claim(url, handle)
    except IntegrityError:          # another process claimed the same key a moment ago
        handle.skip, handle.detail = True, {"claimed_elsewhere": True}
    if handle.skip:
        yield handle
        return
    try:
        yield handle
    except BaseException as exc:
        with session_scope(url) as s:
            run = s.execute(select(JobRun).where(JobRun.task == task, JobRun.key == key)).scalar_one()
            run.status, run.finished_at = "failed", utcnow()
            run.detail = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        raise
    with session_scope(url) as s:
        run = s.execute(select(JobRun).where(JobRun.task == task, JobRun.key == key)).scalar_one()
        run.status, run.finished_at, run.detail = "done", utcnow(), handle.detail


def _claim(url: str, handle: JobHandle) -> None:
    with session_scope(url) as s:
        run = s.execute(select(JobRun).where(JobRun.task == handle.task, JobRun.key == handle.key)
                        ).scalar_one_or_none()
        if run is not None and run.status == "done":
            handle.skip, handle.detail = True, dict(run.detail or {})
        elif run is None:
            s.add(JobRun(task=handle.task, key=handle.key, status="running", started_at=utcnow()))
        else:                                   # failed or interrupted earlier: take it over
            run.status, run.started_at, run.finished_at = "running", utcnow(), None


def last_runs(url: str, task: Optional[str] = None, limit: int = 20) -> list[dict]:
    with session_scope(url) as s:
        q = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
        if task:
            q = q.where(JobRun.task == task)
        return [{"task": r.task, "key": r.key, "status": r.status, "started_at": r.started_at.isoformat(),
                 "finished_at": r.finished_at.isoformat() if r.finished_at else None, "detail": r.detail}
                for r in s.execute(q).scalars()]

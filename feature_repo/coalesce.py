"""Coalesced real-time pushes: many ``push_realtime`` tasks arriving together become one push.

A push costs mostly fixed work (reading the log, the statistics code on a small frame, Feast's
``push``): ~0.2-0.5 s whether it covers 5 entities or 100. At 10 event batches a second, one push
per batch falls behind (the queue grew to 262 pushes in 40 s before this module). Here each task
registers the streams and users it touched and WAITS until a push that began after it registered
has completed; one flusher thread per process runs back-to-back pushes of everything registered
meanwhile. So a task still returns only once its entities are in the online store (the task is
acknowledged after that: a worker killed meanwhile leaves it unacknowledged, as before), and the
delay of an event is at most about two push durations, whatever the arrival rate.

Correctness does not depend on the coalescing: a push recomputes an entity's rows from the event
log as of the push's start, which includes every event committed before the task was sent.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Iterable, Optional

log = logging.getLogger(__name__)


class PushCoalescer:
    """``submit(streams, users)`` blocks until a push covering them has completed (or raises
    its error). ``push(streams, users, at)`` does the work (feature_repo.realtime.push_entities)."""

    def __init__(self, push: Callable[[list, list, datetime], int]):
        self._push = push
        self._cv = threading.Condition()
        self._streams: set = set()
        self._users: set = set()
        self._generation = 0          # generation of the push that will take what is registered now
        self._done = -1               # last generation completed
        self._errors: dict = {}       # generation -> exception (kept briefly for its waiters)
        self._thread: Optional[threading.Thread] = None
        self.pushes = 0
        self.rows = 0

    def submit(self, streams: Iterable[int], users: Iterable[int], timeout_s: float = 300.0) -> dict:
        with self._cv:
            self._streams.update(int(s) for s in streams)
            self._users.update(int(u) for u in users)
            gen = self._generation
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="push-coalescer", daemon=True)
                self._thread.start()
            self._cv.notify_all()
            deadline = time.monotonic() + timeout_s
            while self._done < gen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"real-time push not done within {timeout_s:.0f}s")
                self._cv.wait(left)
            exc = self._errors.get(gen)
        if exc is not None:
            raise exc
        return {"generation": gen}

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._streams and not self._users:
                    self._cv.wait()
                streams, users = sorted(self._streams), sorted(self._users)
                self._streams, self._users = set(), set()
                gen = self._generation
                self._generation += 1          # what registers from now on waits for the next push
            exc = None
            t0 = time.perf_counter()
            try:
                n = self._push(streams, users, datetime.now(timezone.utc))
                self.pushes += 1
                self.rows += n
                log.info("coalesced push %d: %d streams, %d users, %d rows in %.0f ms", gen, len(streams),
                         len(users), n, (time.perf_counter() - t0) * 1000)
            except Exception as e:             # every waiter of this generation gets the error
                exc = e
                log.error("coalesced push %d failed: %s: %s", gen, type(e).__name__, e)
            with self._cv:
                if exc is not None:
                    self._errors[gen] = exc
                for old in [g for g in self._errors if g < gen - 100]:
                    del self._errors[old]
                self._done = gen
                self._cv.notify_all()


_COALESCERS: dict = {}
_LOCK = threading.Lock()


def coalescer_for(key, push: Callable[[list, list, datetime], int]) -> PushCoalescer:
    """The process's coalescer for ``key`` (one per settings)."""
    with _LOCK:
        c = _COALESCERS.get(key)
        if c is None:
            c = _COALESCERS[key] = PushCoalescer(push)
        return c

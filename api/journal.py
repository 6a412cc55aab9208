"""The impression journal: impressions written to a local append-only file before the answer,
drained into the event log in batches by a background flusher.

Why: committing each answer's impressions to the event log inside the request cost 9-28 ms of a
30-65 ms request (a SQL transaction per answer, serialised by SQLite's single writer). A line
appended to a local file costs tens of microseconds.

Durability (what a 200 from /v1/recommend means for its impressions):

- The answer's impression events are ``write(2)``-n to this process's segment file before the
  answer is sent. A process killed with ``kill -9`` (or crashing) loses nothing: the bytes are in
  the kernel, and the segment is drained by the next flusher that finds it (every API process
  looks for segments no live process holds: each holds an ``flock`` on its own).
- ``fsync`` policy (``STREAMRANK_JOURNAL_FSYNC``), as Redis's ``appendfsync``:
  ``everysec`` (default) fsyncs once a second — a power loss or kernel crash can lose the last
  ~1 s of impressions that had not yet reached the event log; ``always`` fsyncs before every
  answer (no loss; ~0.1-5 ms per answer, disk-dependent); ``no`` leaves it to the OS (~30 s).
- Events keep their idempotent ids (``imp-<request_id>-<position>``): a segment drained twice
  (a flusher killed after the commit, before deleting the file) inserts nothing twice.
- The backlog is bounded (``STREAMRANK_JOURNAL_MAX_EVENTS`` not yet in the event log, per
  process): when full — the event log unreachable for long — recommend still answers, the
  impressions of that answer are dropped, and the answer says so
  (``"impressions": {"journaled": false, "dropped": n, "reason": ...}``).

Format: one JSON line per answer, ``{"v": model_version, "e": [event, ...]}``. A torn last line
(the process died mid-write, so that answer was never sent) is skipped.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "everysec", "no")
SUFFIX = ".journal"


class JournalFull(Exception):
    pass


class _Segment:
    """One journal file, exclusively flock-ed by the process that writes or drains it."""

    def __init__(self, path: Path, fd: int, *, lines: int = 0):
        self.path, self.fd, self.lines = path, fd, lines
        self.events = 0                    # journaled into it by this process

    def close(self) -> None:
        try:
            os.close(self.fd)              # releases the flock
        except OSError:
            pass


def _open_locked(path: Path, create: bool) -> Optional[_Segment]:
    flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        # drained and deleted by another flusher meanwhile. For a new segment this is the window
        # between open and flock: another process's orphan drain locked the (empty) file first,
        # found nothing and unlinked it — writing on would append to an unlinked inode, lost.
        os.close(fd)
        return None
    return _Segment(path, fd)


def read_segment(path: Path) -> list[tuple[Optional[str], list]]:
    """(model_version, events) per answer in a segment; a torn last line is skipped."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append((rec.get("v"), list(rec["e"])))
        except (ValueError, KeyError, TypeError):
            torn = i == len(lines) - 1
            (log.info if torn else log.error)("journal %s: line %d unreadable%s; skipped", path.name, i + 1,
                                              " (torn by a crash mid-write; its answer was never sent)"
                                              if torn else "")
    return out


class ImpressionJournal:
    """Per-process journal + flusher. ``sink(events, model_version)`` writes one batch to the
    event log (idempotently) or raises; the flusher retries with back-off."""

    def __init__(self, folder, sink: Callable[[list, Optional[str]], None], *, fsync: str = "everysec",
                 max_events: int = 100_000, flush_interval_s: float = 0.2, batch_events: int = 5000):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"journal fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self.fsync = fsync
        self.max_events = int(max_events)
        self.flush_interval_s = float(flush_interval_s)
        self.batch_events = int(batch_events)
        self._lock = threading.Lock()              # the active segment and the counters
        self._flush_lock = threading.Lock()        # one drain at a time in this process
        self._active: Optional[_Segment] = None
        self._sealed: list[_Segment] = []          # rotated out, not yet in the event log
        self._pending = 0                          # events journaled, not yet in the event log
        self._dirty = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self.stats = {"journaled": 0, "flushed": 0, "dropped": 0, "orphans_drained": 0, "flush_errors": 0,
                      "last_error": None}

    # ------------------------------------------------------------------ writing (request path)
    def append(self, events: list, model_version: Optional[str]) -> None:
        """Journal one answer's impressions; raises :class:`JournalFull` (nothing written) when the
        backlog is at its bound or the file cannot be written."""
        if not events:
            return
        line = json.dumps({"v": model_version, "e": events}, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            self._after_fork()
            if self._pending + len(events) > self.max_events:
                self.stats["dropped"] += len(events)
                raise JournalFull(f"journal backlog full ({self._pending} impressions not yet in the event log)")
            try:
                if self._active is None:
                    self._active = self._new_segment()
                n = os.write(self._active.fd, line)
                if n != len(line):
                    raise OSError(f"short write ({n} of {len(line)} bytes)")
                if self.fsync == "always":
                    os.fsync(self._active.fd)
            except OSError as exc:
                self.stats["dropped"] += len(events)
                raise JournalFull(f"journal not writable: {exc}") from None
            self._active.lines += 1
            self._active.events += len(events)
            self._pending += len(events)
            self._dirty = True
            self.stats["journaled"] += len(events)
        self._ensure_thread()

    def _new_segment(self) -> _Segment:
        for _ in range(5):                 # a name taken by another flusher's orphan drain: a new one
            name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
            seg = _open_locked(self.folder / name, create=True)
            if seg is not None:
                return seg
        raise OSError(f"could not create a journal segment in {self.folder}")

    def _after_fork(self) -> None:
        # a gunicorn worker forked after the journal was used: the parent's segment and thread are
        # not ours (the flock is shared with the parent): start clean
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._active, self._sealed, self._pending, self._thread = None, [], 0, None
            self._stop = threading.Event()

    # ------------------------------------------------------------------ flushing
    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stop.is_set():
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="impression-journal", daemon=True)
                    self._thread.start()

    def start(self) -> None:
        """Start the flusher now (it also drains segments left by dead processes)."""
        self._ensure_thread()

    def _run(self) -> None:
        backoff = self.flush_interval_s
        last_sync = time.monotonic()
        last_orphans = 0.0
        while not self._stop.wait(backoff):
            if self.fsync == "everysec" and time.monotonic() - last_sync >= 1.0:
                self._sync()
                last_sync = time.monotonic()
            try:
                if time.monotonic() - last_orphans >= 5.0:
                    self.drain_orphans()
                    last_orphans = time.monotonic()
                self.flush()
                backoff = self.flush_interval_s
            except Exception as exc:          # the event log is away: keep the journal, retry later
                self.stats["flush_errors"] += 1
                self.stats["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("impression journal: flush failed (%s); %d impressions wait in the journal",
                            self.stats["last_error"], self._pending)
                backoff = min(max(backoff * 2, 0.5), 10.0)

    def _sync(self) -> None:
        with self._lock:
            if self._dirty and self._active is not None:
                try:
                    os.fsync(self._active.fd)
                except OSError as exc:
                    log.warning("impression journal: fsync failed: %s", exc)
                self._dirty = False

    def flush(self) -> int:
        """Drain this process's journal into the event log now; returns events written.
        Raises when the event log cannot be written (the journal keeps them)."""
        with self._flush_lock:
            with self._lock:
                self._after_fork()
                if self._active is not None and self._active.lines:
                    if self._dirty and self.fsync != "no":
                        os.fsync(self._active.fd)
                        self._dirty = False
                    self._sealed.append(self._active)      # rotate: new answers go to a new file
                    self._active = None
                sealed = list(self._sealed)
            written = 0
            for seg in sealed:
                try:
                    n = self._drain(seg)
                except FileNotFoundError:
                    # deleted under us (should not happen: see _open_locked); do not let one lost
                    # file stop the others from draining
                    log.error("impression journal: segment %s vanished; %d impressions lost", seg.path.name,
                              seg.events)
                    self.stats["lost"] = self.stats.get("lost", 0) + seg.events
                    seg.close()
                    n = seg.events
                else:
                    written += n
                with self._lock:
                    self._sealed.remove(seg)
                    self._pending -= n
            self.stats["flushed"] += written
            return written

    def _drain(self, seg: _Segment) -> int:
        """Write a segment's events to the event log (in batches), then delete it."""
        answers = read_segment(seg.path)
        n = 0
        batch: list = []
        version = None
        for v, events in answers:
            if batch and (v != version or len(batch) + len(events) > self.batch_events):
                self.sink(batch, version)
                batch = []
            version = v
            batch.extend(events)
            n += len(events)
        if batch:
            self.sink(batch, version)
        try:
            seg.path.unlink()
        except FileNotFoundError:
            pass
        seg.close()
        return n

    def drain_orphans(self) -> int:
        """Drain segments no live process holds (their writer died); returns events written."""
        total = 0
        mine = {s.path for s in self._sealed} | ({self._active.path} if self._active else set())
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if path in mine:
                continue
            seg = _open_locked(path, create=False)
            if seg is None:                    # held by a live process (or gone)
                continue
            try:
                n = self._drain(seg)
            except BaseException:
                seg.close()
                raise
            if n:
                log.info("impression journal: drained %d impressions left by a stopped process (%s)", n, path.name)
            self.stats["orphans_drained"] += n
            total += n
        return total

    # ------------------------------------------------------------------ state
    @property
    def backlog(self) -> int:
        return self._pending

    def info(self) -> dict:
        return dict(self.stats, backlog=self._pending, fsync=self.fsync, max_events=self.max_events,
                    folder=str(self.folder))

    def close(self, *, flush: bool = True) -> None:
        """Stop the flusher; with ``flush`` try a last drain (what fails stays in the journal)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=10)
        if flush:
            try:
                self.flush()
            except Exception as exc:
                log.warning("impression journal: last flush failed (%s); %d impressions stay in %s for the "
                            "next start", exc, self._pending, self.folder)
        with self._lock:
            for seg in self._sealed + ([self._active] if self._active else []):
                seg.close()
            self._active, self._sealed = None, []

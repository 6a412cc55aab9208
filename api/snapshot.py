"""The in-process snapshot of candidate-side (stream) features.

Stream features are the same for every user within a second, so the API does not ask Feast for
200 candidate rows per request (~20 ms, with 150 ms outliers — NOTES.md). A daemon thread reads
``OnlineFeatures.stream_rows(live streams ∪ recently requested streams)`` every
``settings.snapshot_interval_s`` (start-to-start, minus the read's own duration, so the data a
request sees is at most about one interval old) and swaps an immutable :class:`SnapshotState`
in one reference assignment: a request reads one consistent state without taking a lock.

A candidate missing from the snapshot (not live at the last refresh, or new) is fetched on
demand (catalog category from SQL + its Feast row), added to the current state and kept in the
refresh set while it keeps being requested (up to ``max_extra`` streams, least recently
requested dropped first).

Feast is imported lazily by :class:`feature_repo.online.OnlineFeatures` on the first read.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

_CHUNK = 900    # ids per IN (...) (SQLite's parameter floor)
CATEGORIES_FULL_S = 60.0    # a stream's category change reaches the snapshot within this
LIVE_FULL_S = 3.0           # the live set is re-read at least this often (an end_ts changed in place)


@dataclass(frozen=True)
class SnapshotState:
    """One immutable snapshot: never mutated after it is published (copy-on-write)."""
    frame: pd.DataFrame                    # indexed by stream_id: the stream_rows columns
    categories: dict                       # stream_id -> category (catalog)
    live_ids: tuple                        # streams live at ``as_of`` (sorted)
    as_of: datetime                        # when the read started (aware UTC)
    read_at: float                         # time.monotonic() when the read started
    read_s: float = 0.0                    # duration of the read
    extra: frozenset = field(default_factory=frozenset)
    store_version: Optional[object] = None   # the online store's change marker at the read (None: unknown)
    live_marker: Optional[tuple] = None      # store.ingest.live_windows_marker at the live read

    def age_s(self) -> float:
        return time.monotonic() - self.read_at

    @cached_property
    def live(self) -> "LiveView":
        """The live set with its popularity order, computed once per state (the refresh thread
        builds it before publishing, so a request with 100k live streams pays nothing)."""
        return LiveView.of(self.live_ids, self.frame)


@dataclass(frozen=True)
class LiveView:
    """The streams live now, in three shapes a request needs without touching every row:
    ``ids`` (np.int64, the snapshot's order), ``members`` (a frozenset for membership) and
    ``by_popularity`` (positions into ``ids``, most popular first; ties keep ``ids``' order)."""
    ids: np.ndarray
    members: frozenset
    by_popularity: np.ndarray

    @classmethod
    def of(cls, live_ids, frame: pd.DataFrame) -> "LiveView":
        ids = np.asarray(live_ids, dtype=np.int64)
        if len(ids) and len(frame):
            pop = popularity(frame.reindex(ids))
        else:
            pop = np.zeros(len(ids))
        return cls(ids=ids, members=frozenset(ids.tolist()), by_popularity=np.argsort(-pop, kind="stable"))

    def __len__(self) -> int:
        return len(self.ids)

    def most_popular(self, n: int) -> list[int]:
        """The ``n`` most popular live stream ids, most popular first."""
        return self.ids[self.by_popularity[:n]].tolist()

    def capped(self, n: int) -> list[int]:
        """Every live id when at most ``n`` are live, else the ``n`` most popular in ``ids``' order."""
        if len(self.ids) <= n:
            return self.ids.tolist()
        return self.ids[np.sort(self.by_popularity[:n])].tolist()


def _shareable(frame: pd.DataFrame) -> pd.DataFrame:
    """Build the index's lookup table now, in the refreshing thread: pandas builds it lazily on the
    first ``reindex``/``loc``, and request threads racing to build it at once have raised "cannot
    reindex on an axis with duplicate labels" on a unique index (seen with 4 threads)."""
    if len(frame):
        frame.reindex(frame.index[:1])
    return frame


def stream_categories(database_url: str, stream_ids: Sequence[int]) -> dict:
    """{stream_id: category} for the ids present in the catalog (absent ids are unknown streams)."""
    from sqlalchemy import select

    from store.db import get_engine
    from store.schema import Stream
    ids = [int(i) for i in stream_ids]
    out: dict = {}
    if not ids:
        return out
    with get_engine(database_url).connect() as conn:
        if len(ids) > 20 * _CHUNK:        # one scan of the catalog beats ~100 IN (...) queries
            want = set(ids)
            for sid, cat in conn.execute(select(Stream.stream_id, Stream.category)):
                if sid in want:
                    out[int(sid)] = None if cat is None else int(cat)
            return out
        for i in range(0, len(ids), _CHUNK):
            part = ids[i:i + _CHUNK]
            for sid, cat in conn.execute(select(Stream.stream_id, Stream.category).where(Stream.stream_id.in_(part))):
                out[int(sid)] = None if cat is None else int(cat)
    return out


class StreamSnapshot:
    """Candidate-side features of the live streams, refreshed in the background.

    ``online`` is a :class:`feature_repo.online.OnlineFeatures`; ``feast_lock`` (optional)
    serialises Feast reads with the per-request user reads (the SQLite online store shares one
    connection between threads).
    """

    def __init__(self, settings, online, *, interval_s: Optional[float] = None, feast_lock=None,
                 max_extra: int = 5000, extra_ttl_s: float = 600.0, clock: Callable[[], datetime] = None):
        self.settings = settings
        self.online = online
        self.interval_s = float(interval_s if interval_s is not None else settings.snapshot_interval_s)
        if self.interval_s <= 0:
            raise ValueError("snapshot interval must be > 0")
        self.max_extra = max_extra
        self.extra_ttl_s = extra_ttl_s
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._feast_lock = feast_lock or _NullLock()
        self._state: Optional[SnapshotState] = None
        self._write_lock = threading.Lock()          # one writer at a time (refresh / on-demand add)
        self._extra: "OrderedDict[int, float]" = OrderedDict()   # on-demand streams, LRU by last request
        self._extra_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._categories_at = float("-inf")           # monotonic time of the last full category read
        self._live_at = float("-inf")                 # ... and of the last live-set read
        self.refreshes = 0
        self.skipped = 0                              # refreshes that found the online store unchanged
        self.failures = 0
        self.last_error: Optional[str] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "StreamSnapshot":
        """Start the refresh thread (idempotent). Called lazily on first use by the API."""
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="streamrank-snapshot", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        wait = 0.0 if self._state is None else self.interval_s
        while not self._stop.wait(wait):
            t0 = time.monotonic()
            try:
                self.refresh()
            except Exception as exc:  # keep serving the last good state
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("snapshot refresh failed (%d so far): %s", self.failures, self.last_error)
            took = time.monotonic() - t0
            # start-to-start = interval minus the read itself: data stays <= ~interval old
            wait = max(0.05 * self.interval_s, self.interval_s - took)

    # ------------------------------------------------------------------ reads
    def state(self) -> SnapshotState:
        """The current state; the first call (or one after a long failure) reads synchronously."""
        st = self._state
        if st is None:
            with self._write_lock:
                st = self._state
                if st is None:
                    st = self._refresh_locked()
        return st

    def refresh(self) -> SnapshotState:
        with self._write_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> SnapshotState:
        from store.ingest import live_stream_ids, live_windows_marker
        t0 = time.monotonic()
        as_of = self._clock()
        prev = self._state
        url = self.settings.database_url
        # the live set: re-read when a window was added, one started or ended since the last read,
        # or LIVE_FULL_S passed (100k live ids are ~0.3 s of Python; the marker is four aggregates)
        # (a window passing its start or end moves the marker's "next start / end after now")
        marker = live_windows_marker(url, as_of)
        if prev is not None and prev.live_marker == marker and t0 - self._live_at < LIVE_FULL_S:
            live = prev.live_ids
        else:
            live = tuple(live_stream_ids(url, as_of))
            self._live_at = t0
        with self._extra_lock:
            horizon = t0 - self.extra_ttl_s
            while self._extra and next(iter(self._extra.values())) < horizon:
                self._extra.popitem(last=False)          # not requested for extra_ttl_s: dropped
            extra = frozenset(self._extra)
        ids = list(live) + sorted(extra.difference(live))
        # categories: the previous state's for streams it knew (a catalog read of 100k live streams
        # is ~1 s), the catalog's for new ones, and all of them again every CATEGORIES_FULL_S
        known = {}
        if prev is not None and t0 - self._categories_at < CATEGORIES_FULL_S:
            known = prev.categories
        else:
            self._categories_at = t0
        if known and live is prev.live_ids and extra == prev.extra:
            cats = known                                        # the same streams as the last read
        else:
            cats = {i: known[i] for i in ids if i in known}
            cats.update(stream_categories(url, [i for i in ids if i not in known]))
        ids = [i for i in ids if i in cats]                    # a stream deleted from the catalog
        version = self.online.store_version()
        same_store = prev is not None and version is not None and version == prev.store_version
        if same_store and (live is prev.live_ids and extra == prev.extra or list(prev.frame.index) == ids):
            frame = prev.frame          # nothing written to the online store since: no re-read
            self.skipped += 1
        elif same_store and len(ids) > 20 * _CHUNK:
            # the same store, other streams: keep the rows read before, read only the new streams'
            # (a stream going live must not cost a read of all 100k rows)
            have = prev.frame.index
            new = [i for i in ids if i not in have]
            if new:
                with self._feast_lock:
                    rows = self.online.stream_rows(new).set_index("stream_id")
                frame = _shareable(pd.concat([prev.frame, rows]).reindex(ids))
            else:
                frame = _shareable(prev.frame.reindex(ids))
            self.skipped += 1
        else:
            with self._feast_lock:
                frame = self.online.stream_rows(ids)
            frame = _shareable(frame.set_index("stream_id"))
        st = SnapshotState(frame=frame, categories=cats, live_ids=live, as_of=as_of, read_at=t0,
                           read_s=time.monotonic() - t0, extra=extra, store_version=version, live_marker=marker)
        if prev is not None and frame is prev.frame and prev.live_ids == live:
            st.__dict__["live"] = prev.live   # same rows, same live set: same view
        st.live                         # built here, not by the first request
        self._state = st
        self.refreshes += 1
        return st

    def live_ids(self) -> list[int]:
        """Streams live now, as of the snapshot (at most about one interval old)."""
        st = self.state()
        if st.age_s() > max(3 * self.interval_s, 2.0):
            # the refresh thread is behind or failing: the live set comes straight from SQL
            from store.ingest import live_stream_ids
            return live_stream_ids(self.settings.database_url, self._clock())
        return list(st.live_ids)

    def live(self) -> LiveView:
        """:meth:`live_ids` as a :class:`LiveView` (one per snapshot state; rebuilt from SQL's live
        set only when the refresh thread is behind)."""
        st = self.state()
        if st.age_s() > max(3 * self.interval_s, 2.0):
            return LiveView.of(self.live_ids(), st.frame)
        return st.live

    def rows(self, stream_ids: Sequence[int]) -> tuple[pd.DataFrame, list, list[int]]:
        """(stream feature rows in ``stream_ids`` order, their categories, unknown ids).

        Unknown = not in the catalog (the caller answers 400 naming them). Known streams missing
        from the snapshot are fetched now and added to it.
        """
        ids = [int(i) for i in stream_ids]
        st = self.state()
        missing = [i for i in ids if i not in st.categories]
        unknown: list[int] = []
        if missing:
            st, unknown = self._add(missing)
        if st.extra:
            self._touch([i for i in ids if i in st.extra])
        if unknown:
            return st.frame.iloc[0:0], [], unknown
        frame = st.frame.reindex(ids)
        frame.index.name = "stream_id"
        frame = frame.reset_index()
        cats = [st.categories.get(i) for i in ids]
        return frame, cats, []

    def _add(self, missing: list[int]) -> tuple[SnapshotState, list[int]]:
        cats = stream_categories(self.settings.database_url, missing)
        unknown = [i for i in missing if i not in cats]
        known = [i for i in missing if i in cats]
        if not known:
            return self.state(), unknown
        with self._feast_lock:
            rows = self.online.stream_rows(known).set_index("stream_id")
        with self._write_lock:
            st = self._state if self._state is not None else self._refresh_locked()
            new = [i for i in known if i not in st.categories]
            if new:
                frame = _shareable(pd.concat([st.frame, rows.loc[new]]) if len(st.frame) else rows.loc[new])
                old = st
                st = SnapshotState(frame=frame, categories={**st.categories, **{i: cats[i] for i in new}},
                                   live_ids=st.live_ids, as_of=st.as_of, read_at=st.read_at, read_s=st.read_s,
                                   extra=st.extra.union(new), live_marker=st.live_marker)
                st.__dict__["live"] = old.live        # the live set is unchanged by on-demand rows
                self._state = st
        self._touch(known)
        return st, unknown

    def _touch(self, ids: list[int]) -> None:
        now = time.monotonic()
        with self._extra_lock:
            for i in ids:
                self._extra[i] = now
                self._extra.move_to_end(i)
            while len(self._extra) > self.max_extra:
                self._extra.popitem(last=False)

    def info(self) -> dict:
        st = self._state
        return {"running": self.running, "interval_s": self.interval_s, "refreshes": self.refreshes,
                "unchanged": self.skipped,
                "failures": self.failures, "last_error": self.last_error,
                "streams": None if st is None else int(len(st.frame)),
                "live": None if st is None else len(st.live_ids),
                "age_s": None if st is None else round(st.age_s(), 3),
                "read_ms": None if st is None else round(st.read_s * 1000, 1)}


def popularity(frame: pd.DataFrame) -> np.ndarray:
    """Popularity score of stream rows: clicks in the last 7 days (0 when unknown)."""
    for col in ("s_clicks_7d", "s_clicks_30d", "s_exposures_7d"):
        if col in frame.columns:
            return np.nan_to_num(pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float), nan=0.0)
    return np.zeros(len(frame))


class _NullLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

"""Retrieval in the API: the candidates of ``/v1/recommend`` when the client gives none.

With an active ``two_tower`` version in the registry (hot-swapped like the rankers), the candidates
are :func:`retrieval.candidates.merge` of

- ``repeat``: the user's recent streams (Feast ``user_recent``, fresh by push) that are live now;
- ``ann``: the live streams nearest to the user's vector — the user tower run on those same lists
  at request time (a watch pushed a second ago changes it) — from a :class:`retrieval.index.LiveIndex`;
- ``popular``: the most popular live streams (7-day clicks), as fill;

at most ``BUDGET`` (200) into the ranker, each answer item saying which channel brought it. The
index holds the vectors of the streams live now: a thread syncs it to the snapshot's live set
every ``SYNC_S`` (a stream that goes live is retrievable, one that ends is gone, within about a
second plus the snapshot's own refresh). Without an active version: today's candidates (every
live stream, the most popular MAX_CANDIDATES when more are live).
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

BUDGET = 200
REPEAT_N = 50
ANN_N = 150
SYNC_S = 1.0


def load_retrieval(path: str):
    import torch

    from retrieval.artifact import RetrievalModel
    torch.set_num_threads(1)
    return RetrievalModel(path)


class Retrieval:
    """The active two-tower, the live index of its stream vectors and the thread that syncs it."""

    def __init__(self, settings, snapshot_fn, *, check_s: float = 2.0, background: bool = True):
        from .scoring import ModelHolder
        self.holder = ModelHolder(settings, "two_tower", loader=load_retrieval, check_s=check_s)
        self._snapshot_fn = snapshot_fn
        self._lock = threading.Lock()
        self._index = None            # (model version, LiveIndex)
        self._live_key = None
        self.syncs = 0
        self.last_error: Optional[str] = None
        self._stop = threading.Event()
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._run, name="streamrank-retrieval-sync", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SYNC_S):
            try:
                self.sync()
            except Exception as exc:              # keep serving the last index
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("retrieval index sync failed: %s", self.last_error)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def sync(self):
        """Make the index hold exactly the live streams' vectors of the active version (a new
        version gets a new index). Returns the LiveIndex or None (no active version)."""
        from retrieval.index import LiveIndex
        loaded, _ = self.holder.get()
        if loaded is None:
            self._index = None
            return None
        model = loaded.model
        live = np.asarray(self._snapshot_fn().live_ids(), dtype=np.int64)
        with self._lock:
            cur = self._index
            if cur is None or cur[0] != loaded.version:
                cur = (loaded.version, LiveIndex(model.dim))
                self._live_key = None
            prev = self._live_key
            if prev is None or prev[0] != loaded.version or not np.array_equal(prev[1], live):
                key = (loaded.version, live)
                ids = live[model.known(live)]
                cur[1].sync((ids, model.stream_vectors(ids)))
                self._live_key = key
                self.syncs += 1
            self._index = cur
        return cur[1]

    def current(self):
        """(loaded model, its LiveIndex) or (None, None)."""
        loaded, _ = self.holder.get()
        if loaded is None:
            return None, None
        cur = self._index
        if cur is None or cur[0] != loaded.version:
            self.sync()                   # first request after a (re)load: build it now
            cur = self._index
        return loaded, (cur[1] if cur is not None else None)

    def candidates(self, online, user_id: int, live, now_s: float) -> Optional[tuple[list, list, str]]:
        """``(ids, sources, version)`` for the ranker, or None without an active version.

        ``live`` is the snapshot's :class:`api.snapshot.LiveView`: membership and the popular fill
        come from it, so a request costs the same with 1,000 or 100,000 streams live."""
        from retrieval.candidates import merge
        loaded, index = self.current()
        if loaded is None or index is None:
            return None
        streams, ts = online.user_recent(user_id)
        repeat = [s for s in streams if s in live.members][:REPEAT_N]
        ann: list = []
        if len(index):
            u = loaded.model.user_vectors(streams, ts, now_s)                    # [K, d]
            found, scores = index.search(u, min(ANN_N, len(index)))
            if np.ndim(found) == 2 and len(found) > 1:                           # K interests: max-affinity merge
                best: dict = {}
                for row_ids, row_sc in zip(found, scores):
                    for s, v in zip(np.asarray(row_ids).tolist(), np.asarray(row_sc).tolist()):
                        if s not in best or v > best[s]:
                            best[s] = v
                ann = sorted(best, key=lambda s: -best[s])[:ANN_N]
            else:
                ann = np.asarray(found).reshape(-1).tolist()
            ann = [s for s in ann if s in live.members]       # the index lags the live set by <= SYNC_S
        ids, sources = merge(repeat=repeat, ann=ann, popular=live.most_popular(BUDGET), budget=BUDGET)
        return ids, sources, loaded.version

    def info(self) -> dict:
        cur = self._index
        loaded = self.holder._current
        return {"version": None if loaded is None else loaded.version,
                "indexed": None if cur is None else len(cur[1]), "syncs": self.syncs,
                "last_error": self.last_error, "fallback_reason": None if loaded else self.holder._reason}


__all__ = ["Retrieval", "load_retrieval", "BUDGET"]

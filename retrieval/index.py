r"""The ANN index over the live streams: updated while it serves (issue 14 item 2).

:class:`LiveIndex` holds one vector per live stream (the stream tower's output) and answers
"the ``k`` streams with the largest inner product with this user vector". The serving side calls
:meth:`LiveIndex.sync` about once a second with the live-stream snapshot, so a stream that goes
live is retrievable, and one that ends is gone, within one sync period (well inside the 5 s of the
issue); requests call :meth:`LiveIndex.search` from many threads at the same time.

Shapes: ``ids`` int64 ``[n]``; ``vectors`` float32 ``[n, d]`` (L2-normalised by the model; the
metric is the inner product either way); ``query`` float32 ``[d]`` or ``[q, d]``;
:meth:`~LiveIndex.search` returns ``(ids, scores)``: int64 / float32 ``[k']`` or ``[q, k']`` with
``k' = min(k, len(index))``, best first, scores the inner products.

Why hnswlib (``bench/ann_choice.py``; 100,000 random unit vectors, d = 64, k = 100, one query per
call on 1 thread, 2 shared cores, M = 16 / ef_construction = 128 for every graph):

uniform (worst case: full intrinsic dimension)  recall@100, p50 / p99 ms; add/s 1 thread
  numpy exact        1.00, 2.98 / 4.36
  hnswlib 0.8.0      build 43 s; ef 400: 0.82, 1.14 / 1.54; ef 800: 0.94, 2.16 / 2.59; 1,855 add/s
  faiss HNSW 1.15.1  build 47 s; ef 800: 0.96, 2.67 / 3.23; 1,909 add/s; remove: NOT supported
  faiss IVF-Flat     build 11 s; nprobe 256 of 1264: 0.77, 0.75 / 1.02; 133,194 add/s
  usearch 2.26.6     build 76 s; ef 400: 0.82, 3.03 / 4.76; ef 800: 0.94, 5.46 / 6.69; 968 add/s
clustered (``--data clustered``: 1,000 clusters, a stand-in for trained embeddings)
  numpy exact        1.00, 3.87 / 5.98
  hnswlib            ef 100: 0.994, 0.29 / 0.41; 3,395 add/s; 0.993 after 5% churn
  faiss IVF-Flat     nprobe 32: 0.998, 0.15 / 0.20; 112,821 add/s
  usearch            ef 100: 0.993, 0.52 / 0.92; 1,354 add/s

No candidate reaches recall 0.95 under 2 ms on uniform random 64-d vectors at 100k; hnswlib
comes closest among those that can remove (0.94 at 2.2 ms; usearch needs 5.5 ms for the same,
IVF-Flat is at 0.77). On clustered vectors IVF-Flat is faster still and adds 30x faster, but how
well IVF does depends entirely on how the real embeddings cluster (and its centroids go stale
when the model is retrained), while the graph is good on both. Re-check with the trained stream
tower's vectors (bench/retrieval.py); the backend is confined to this module.

- faiss HNSW cannot remove ids (``remove_ids not implemented``, faiss#3339): out, streams end
  every second.
- faiss IVF-Flat removes, but on uniform data needs a large share of the lists for recall 0.95,
  and its centroids go stale as the embedding model is retrained.
- usearch removes and reuses slots, but in 2.26 its single queries cost about twice hnswlib's at
  the same recall here (about 50 us of it Python wrapper), its Python binding takes one
  per-index mutex around every search (concurrent searches are serialised inside it) and its
  ``remove`` runs outside that mutex; concurrent ``add`` still has an open bug that leaves
  unreachable nodes (unum-cloud/USearch#735). It would need the same external lock as hnswlib.
- hnswlib is the fastest at a given recall and supports ``mark_deleted`` + slot reuse
  (``allow_replace_deleted``). Its two weak points are handled here: (1) concurrent add + search
  is unsafe (nmslib/hnswlib#29, #562, #590) -> every write holds an exclusive lock that no search
  holds; (2) ``add_items(replace_deleted=True)`` with a label that is still marked deleted in
  another slot loses the label from its lookup table (measured: the next ``mark_deleted`` says
  "Label not found", so that vector could never be removed again) -> this index never reuses a
  label: every (re-)added vector gets a fresh internal label and a Python map turns labels into
  stream ids. Its last release is 2023-12 (0.8.0) and PyPI has no cp311 wheel (it compiles at
  install, with ``-march=native`` when available): pinned, built in the image, and wrapped so
  that the backend can be swapped.

Concurrency: a phase-fair readers-writer lock. Searches share it (hnswlib's ``knn_query`` and the
numpy product release the GIL, so concurrent searches overlap); a write is exclusive, but a large
upsert is applied in chunks of ``write_chunk`` vectors (about 0.5 ms per vector at 100k), releasing
the lock between chunks, so a search waits for at most one chunk, never for the whole batch; and
readers that were waiting when a write ends go before the next write. :meth:`sync` computes its
diff outside the exclusive lock (writers are serialised by a separate mutex, so the state it
diffs cannot change under it). Removal (``mark_deleted``, ~1 us) is applied in one exclusive
section, so once :meth:`remove` / :meth:`sync` returns no search can return those ids.

Small indexes (fewer than ``exact_below`` vectors, 2,000 by default) are searched exactly with
numpy: cheaper than the graph there, and exact; the graph is built when the index first grows
past that size and kept up to date from then on.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np

__all__ = ["LiveIndex"]


class _RWLock:
    """Phase-fair readers-writer lock: many readers or one writer; when a writer releases, the
    readers that waited for it are admitted before the next writer (no starvation either way)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0          # active readers
        self._writer = False       # a writer holds the lock
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._admit = 0            # readers let through by the last writer's release
        self._gen = 0              # number of write releases

    @contextmanager
    def read(self):
        with self._cond:
            if self._writer or self._writers_waiting:
                self._readers_waiting += 1
                gen = self._gen
                while self._writer or (self._writers_waiting and self._gen == gen):
                    self._cond.wait()
                self._readers_waiting -= 1
                if self._admit:
                    self._admit -= 1
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers or self._admit:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._gen += 1
                self._admit = self._readers_waiting
                self._cond.notify_all()


class LiveIndex:
    r"""Inner-product top-k over a changing set of (stream id, vector) pairs.

    Args:
        dim (int): vector dimension ``d``.
        capacity (int): initial room (vectors); the index grows past it by doubling.
        ef (int): hnswlib search width (``max(ef, k)`` is used). Default 1200: recall@100 0.975 at
            p50 1.8 ms on 100k stream-tower vectors (``bench/retrieval.py``; ef 400: 0.84, ef 800:
            0.946); uniform random vectors need more (ef 800: 0.94), clustered ones less (ef 100:
            0.99); ``bench/ann_choice.py`` prints the trade-off.
        M (int), ef_construction (int): hnswlib graph parameters.
        exact_below (int): below this many vectors search is exact (numpy).
        write_chunk (int): vectors added per exclusive lock hold (bounds a search's wait).
        threads (int): hnswlib threads for the one-off graph build.
        seed (int): hnswlib's random seed.

    Example::

        index = LiveIndex(dim=64)
        index.sync({17: v17, 42: v42})          # exactly these streams are live
        ids, scores = index.search(user_vec, k=100)
    """

    def __init__(self, dim: int, *, capacity: int = 1024, ef: int = 1200, M: int = 16,
                 ef_construction: int = 128, exact_below: int = 2000, write_chunk: int = 16,
                 threads: int = 1, seed: int = 100) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.dim = int(dim)
        self.ef, self.M, self.ef_construction = int(ef), int(M), int(ef_construction)
        self.exact_below, self.write_chunk = int(exact_below), max(1, int(write_chunk))
        self.threads, self.seed = max(1, int(threads)), int(seed)
        cap = max(16, int(capacity))
        self._vecs = np.zeros((cap, self.dim), np.float32)   # rows 0.._n-1 are live
        self._row_ids = np.zeros(cap, np.int64)               # row -> stream id
        self._row_labels = np.zeros(cap, np.uint64)           # row -> hnswlib label
        self._row: dict[int, int] = {}                        # stream id -> row
        self._id_of_label: dict[int, int] = {}                # live hnswlib label -> stream id
        self._n = 0
        self._next_label = 0
        self._graph = None                                    # hnswlib.Index once built
        self._graph_deleted = 0                               # its marked-deleted slots
        self._lock = _RWLock()
        self._writer = threading.Lock()                       # serialises writers

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return self._n

    def __contains__(self, stream_id) -> bool:
        return int(stream_id) in self._row

    def ids(self) -> np.ndarray:
        """The present stream ids (int64 ``[n]``, in no particular order)."""
        with self._lock.read():
            return self._row_ids[:self._n].copy()

    def vectors(self, ids) -> np.ndarray:
        """The stored vectors of present ``ids`` (float32 ``[len(ids), d]``); KeyError if absent."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        with self._lock.read():
            return self._vecs[[self._row[int(i)] for i in ids]].copy()

    def search(self, query, k: int):
        """Top-``k`` present ids by inner product with ``query`` ([d] or [q, d]), best first.

        Returns ``(ids, scores)``: int64 and float32 arrays, ``[k']`` for a ``[d]`` query and
        ``[q, k']`` for ``[q, d]``, ``k' = min(k, len(self))``.
        """
        q = np.asarray(query, dtype=np.float32)
        single = q.ndim == 1
        q2 = np.ascontiguousarray(q.reshape(1, -1) if single else q)
        if q2.ndim != 2 or q2.shape[1] != self.dim:
            raise ValueError(f"query must be [{self.dim}] or [q, {self.dim}], got {q.shape}")
        if k <= 0:
            raise ValueError("k must be positive")
        with self._lock.read():
            n = self._n
            kk = min(int(k), n)
            if kk == 0:
                ids, scores = np.empty((len(q2), 0), np.int64), np.empty((len(q2), 0), np.float32)
            elif self._graph is None or n < self.exact_below:
                ids, scores = self._exact(q2, kk)
            else:
                ids, scores = self._ann(q2, kk)
        return (ids[0], scores[0]) if single else (ids, scores)

    def _exact(self, q2: np.ndarray, kk: int):
        sc = q2 @ self._vecs[:self._n].T
        if kk < self._n:
            top = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(self._n), sc.shape)
        top_sc = np.take_along_axis(sc, top, axis=1)
        order = np.argsort(-top_sc, axis=1, kind="stable")
        rows = np.take_along_axis(top, order, axis=1)
        return self._row_ids[rows], np.take_along_axis(top_sc, order, axis=1).astype(np.float32)

    def _ann(self, q2: np.ndarray, kk: int):
        try:
            labels, dist = self._graph.knn_query(q2, k=kk, num_threads=1)
        except RuntimeError:
            # hnswlib raises when it finds fewer than k (a sparse graph after many removals):
            # exact search is correct, and rare
            return self._exact(q2, kk)
        lookup = self._id_of_label
        out_ids = np.empty(labels.shape, np.int64)
        keep = np.ones(labels.shape, bool)
        for r, row in enumerate(labels.tolist()):
            for c, lab in enumerate(row):
                sid = lookup.get(lab)
                if sid is None:  # not live (cannot happen under the lock; never trust it)
                    keep[r, c] = False
                else:
                    out_ids[r, c] = sid
        scores = (1.0 - dist).astype(np.float32)
        if keep.all():
            return out_ids, scores
        return self._exact(q2, kk)

    # ----------------------------------------------------------------- writes

    def upsert(self, ids, vectors) -> int:
        """Add ``ids`` with ``vectors`` (int64 [n], float32 [n, d]); a present id gets the new
        vector. Duplicate ids in one call: the last one wins. Returns the number of new ids."""
        ids, vecs = self._check(ids, vectors)
        with self._writer:
            return self._upsert(ids, vecs)

    def remove(self, ids) -> int:
        """Remove ``ids`` (absent ones are ignored). When this returns, no search returns them.
        Returns the number removed."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        with self._writer:
            return self._remove(ids)

    def sync(self, live) -> dict:
        """Make the index hold exactly ``live``: a ``{stream id: vector}`` mapping or an
        ``(ids, vectors)`` pair. New ids are added, absent ones removed, ids whose vector changed
        are replaced. Returns ``{"added", "removed", "updated", "size"}``."""
        if isinstance(live, Mapping):
            ids = np.fromiter((int(i) for i in live.keys()), np.int64, len(live))
            vecs = (np.stack([np.asarray(v, np.float32).reshape(-1) for v in live.values()])
                    if len(live) else np.empty((0, self.dim), np.float32))
        else:
            ids, vecs = live
        ids, vecs = self._check(ids, vectors=vecs)
        with self._writer:
            # only writers mutate and we are the writer: reading the state needs no lock here
            n = self._n
            cur = self._row_ids[:n]
            ended = cur[~np.isin(cur, ids)]
            present = np.isin(ids, cur)
            new = ~present
            changed = np.zeros(len(ids), bool)
            if present.any():
                rows = np.fromiter((self._row[i] for i in ids[present].tolist()), np.int64,
                                   int(present.sum()))
                changed[present] = np.any(self._vecs[rows] != vecs[present], axis=1)
            removed = self._remove(ended)
            todo = new | changed
            added = self._upsert(ids[todo], vecs[todo]) if todo.any() else 0
            return {"added": added, "removed": removed, "updated": int(changed.sum()),
                    "size": self._n}

    # --------------------------------------------------------------- internals

    def _check(self, ids, vectors):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim == 1 and len(ids) == 1:
            vecs = vecs.reshape(1, -1)
        if vecs.ndim != 2 or vecs.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must be [{len(ids)}, {self.dim}], got {vecs.shape}")
        if not np.isfinite(vecs).all():
            raise ValueError("vectors must be finite")
        if len(ids):
            # last occurrence of each id wins
            _, first_rev = np.unique(ids[::-1], return_index=True)
            if len(first_rev) != len(ids):
                keep = np.sort(len(ids) - 1 - first_rev)
                ids, vecs = ids[keep], vecs[keep]
        return ids, np.ascontiguousarray(vecs)

    def _grow(self, need: int) -> None:
        cap = len(self._vecs)
        if need <= cap:
            return
        new_cap = max(need, 2 * cap)
        for name in ("_vecs", "_row_ids", "_row_labels"):
            old = getattr(self, name)
            arr = np.zeros((new_cap,) + old.shape[1:], old.dtype)
            arr[:self._n] = old[:self._n]
            setattr(self, name, arr)

    def _upsert(self, ids: np.ndarray, vecs: np.ndarray) -> int:
        added = 0
        step = self.write_chunk if self._graph is not None else max(len(ids), 1)
        for s in range(0, len(ids), step):
            with self._lock.write():
                added += self._upsert_locked(ids[s:s + step], vecs[s:s + step])
        if self._graph is None and self._n >= self.exact_below:
            self._build_graph()
        return added

    def _upsert_locked(self, ids: np.ndarray, vecs: np.ndarray) -> int:
        m = len(ids)
        if m == 0:
            return 0
        self._grow(self._n + m)
        labels = np.arange(self._next_label, self._next_label + m, dtype=np.uint64)
        self._next_label += m
        old_labels, added = [], 0
        for sid, vec, lab in zip(ids.tolist(), vecs, labels.tolist()):
            r = self._row.get(sid)
            if r is None:
                r = self._n
                self._n += 1
                self._row[sid] = r
                self._row_ids[r] = sid
                added += 1
            else:
                old_labels.append(int(self._row_labels[r]))
            self._vecs[r] = vec
            self._row_labels[r] = lab
        g = self._graph
        if g is not None:
            for lab in old_labels:
                g.mark_deleted(lab)  # frees its slot for the fresh label below
            self._graph_deleted += len(old_labels)
            free = g.get_max_elements() - g.get_current_count() + self._graph_deleted
            if free < m:
                g.resize_index(max(g.get_max_elements() * 2, g.get_current_count() + m))
            # fresh labels only (see the module docstring); deleted slots are reused first
            g.add_items(vecs, labels, num_threads=1, replace_deleted=True)
            self._graph_deleted -= min(m, self._graph_deleted)
        for lab in old_labels:
            self._id_of_label.pop(lab, None)
        self._id_of_label.update(zip(labels.tolist(), ids.tolist()))
        return added

    def _remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        removed = 0
        with self._lock.write():
            g = self._graph
            for sid in ids.tolist():
                r = self._row.pop(sid, None)
                if r is None:
                    continue
                lab = int(self._row_labels[r])
                if g is not None:
                    g.mark_deleted(lab)
                    self._graph_deleted += 1
                self._id_of_label.pop(lab, None)
                last = self._n - 1
                if r != last:  # move the last row into the hole
                    moved = int(self._row_ids[last])
                    self._vecs[r] = self._vecs[last]
                    self._row_ids[r] = moved
                    self._row_labels[r] = self._row_labels[last]
                    self._row[moved] = r
                self._n = last
                removed += 1
        return removed

    def _build_graph(self) -> None:
        """Build the hnswlib graph over the current rows (first growth past ``exact_below``).
        Built outside the exclusive lock (searches stay exact meanwhile); the rows added since
        the snapshot are caught up in one exclusive section."""
        import hnswlib

        with self._lock.read():
            n = self._n
            vecs = self._vecs[:n].copy()
            labels = self._row_labels[:n].copy()
        g = hnswlib.Index(space="ip", dim=self.dim)
        g.init_index(max_elements=max(2 * n, len(self._vecs)), M=self.M,
                     ef_construction=self.ef_construction, random_seed=self.seed,
                     allow_replace_deleted=True)
        g.set_ef(self.ef)
        g.add_items(vecs, labels, num_threads=self.threads)
        with self._lock.write():
            # the caller holds self._writer, so nothing changed since the snapshot
            assert self._n == n
            self._graph = g

r"""Watch histories for retrieval: from a log of (user, stream, time) watches to the tensors of the
two-tower model, point in time (a query at :math:`t` sees only watches that started before :math:`t`).

A user's log is collapsed into **sessions**: consecutive watches of one stream with gaps of at most
``session_gap_s`` are one token ``(stream, start)``. (Twitch records a watch per 10-minute slot
— a two-hour watch is twelve rows; as tokens they would crowd out everything else.)

Shapes (``B`` queries, ``L`` = ``seq_len`` short-term tokens, ``Lh`` = ``long_len`` long-term):

- ``seq [B, L]`` stream rows (``0`` = padding, real rows are ``1..N``), left-padded: the latest
  token is at ``L - 1``;
- ``gap [B, L]`` time-gap bucket of each token to the query time (:func:`gap_bucket`);
- ``long [B, Lh]`` the stream rows of the longer history (padding 0);
- ``target [B]`` the stream row to retrieve (training and evaluation).

Stream ids are mapped to rows ``1..N`` by :class:`Vocab` (``0`` is padding / unknown).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

GAP_BUCKETS = 24


def gap_bucket(gap_s: np.ndarray) -> np.ndarray:
    r"""Bucket of a time gap :math:`\Delta` (seconds): :math:`\lfloor \log_2(1 + \Delta / 60) \rfloor`,
    clipped to ``[0, GAP_BUCKETS - 1]`` (a minute, two, four, ... about 30 years)."""
    g = np.log2(1.0 + np.maximum(np.asarray(gap_s, dtype=np.float64), 0.0) / 60.0)
    return np.clip(np.floor(g), 0, GAP_BUCKETS - 1).astype(np.int64)


class Vocab:
    """Stream ids ↔ rows ``1..N`` (row 0: padding / unknown)."""

    def __init__(self, ids):
        self.ids = np.unique(np.asarray(ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(len(ids), np.int64)
        pos = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos + 1, 0).astype(np.int64)

    def id_of(self, rows) -> np.ndarray:
        return self.ids[np.asarray(rows, dtype=np.int64) - 1]


@dataclass
class Sessions:
    """Every user's sessions, sorted by (user, start): ``user``, ``stream`` (ids), ``start``
    (seconds), and ``offsets``: the sessions of ``users[i]`` are ``offsets[i]:offsets[i+1]``."""
    user: np.ndarray
    stream: np.ndarray
    start: np.ndarray
    users: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_watches(cls, user, stream, ts_s, session_gap_s: float = 600.0) -> "Sessions":
        df = pd.DataFrame({"u": np.asarray(user, np.int64), "s": np.asarray(stream, np.int64),
                           "t": np.asarray(ts_s, np.float64)}).sort_values(["u", "s", "t"], kind="stable")
        u, s, t = df["u"].to_numpy(), df["s"].to_numpy(), df["t"].to_numpy()
        new = np.ones(len(df), bool)
        new[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1]) | (t[1:] - t[:-1] > session_gap_s)
        ses = pd.DataFrame({"u": u[new], "s": s[new], "t": t[new]}).sort_values(["u", "t", "s"], kind="stable")
        u, s, t = ses["u"].to_numpy(), ses["s"].to_numpy(), ses["t"].to_numpy()
        users, first = np.unique(u, return_index=True)
        offsets = np.r_[first, len(u)].astype(np.int64)
        return cls(user=u, stream=s, start=t, users=users, offsets=offsets)

    def __len__(self) -> int:
        return len(self.user)

    def before(self, user, t_s) -> tuple[np.ndarray, np.ndarray]:
        """For each query (user, t): ``(lo, hi)`` — its sessions that started before t are ``lo:hi``."""
        user = np.asarray(user, np.int64)
        t_s = np.asarray(t_s, np.float64)
        ui = np.searchsorted(self.users, user)
        ui_c = np.clip(ui, 0, max(len(self.users) - 1, 0))
        known = (ui < len(self.users)) & (self.users[ui_c] == user) if len(self.users) else np.zeros(len(user), bool)
        lo = np.where(known, self.offsets[ui_c], 0)
        if not len(self.user):
            return lo, lo.copy()
        # one sorted key over (user, start): hi = the first session of the user at or after t
        tmin = min(self.start.min(), t_s.min()) if len(t_s) else self.start.min()
        span = max(self.start.max(), t_s.max() if len(t_s) else 0) - tmin + 1.0
        s_user = np.repeat(np.arange(len(self.users)), np.diff(self.offsets))
        s_key = s_user * span + (self.start - tmin)
        q_key = ui_c * span + (t_s - tmin)
        hi = np.where(known, np.searchsorted(s_key, q_key, side="left"), lo)
        hi = np.clip(hi, lo, np.where(known, self.offsets[np.minimum(ui_c + 1, len(self.users))], lo))
        return lo, hi


def windows(sessions: Sessions, vocab: Vocab, lo: np.ndarray, hi: np.ndarray, t_s: np.ndarray,
            length: int, with_gap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` sessions of each query as ``(rows [B, length], gap buckets [B, length])``,
    left-padded with 0."""
    idx = hi[:, None] - length + np.arange(length)[None, :]
    valid = idx >= lo[:, None]
    idx_c = np.where(valid, idx, 0)
    if len(sessions):
        rows = np.where(valid, vocab.rows(sessions.stream[idx_c.reshape(-1)]).reshape(idx.shape), 0)
    else:
        rows = np.zeros(idx.shape, np.int64)
    gap = np.zeros(idx.shape, np.int64)
    if with_gap and len(sessions):
        g = gap_bucket(np.asarray(t_s, np.float64)[:, None] - sessions.start[idx_c])
        gap = np.where(valid, g, 0)
    return rows.astype(np.int64), gap.astype(np.int64)


def distinct_windows(events: Sessions, vocab: Vocab, lo: np.ndarray, hi: np.ndarray, t_s: np.ndarray,
                     length: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's last ``length`` DISTINCT streams before t, each at its latest time — what Feast's
    ``user_recent`` lists hold online (``recent_streams``, ``recent_stream_ts``) — as
    ``(rows [B, length], gap buckets [B, length])``, oldest first, left-padded with 0."""
    B = len(lo)
    rows = np.zeros((B, length), np.int64)
    gap = np.zeros((B, length), np.int64)
    if not len(events):
        return rows, gap
    ev_rows = vocab.rows(events.stream)
    t_s = np.asarray(t_s, np.float64)
    for b in range(B):
        seen: set = set()
        got_r, got_t = [], []
        j = hi[b] - 1
        while j >= lo[b] and len(got_r) < length:
            r = ev_rows[j]
            if r not in seen:
                seen.add(r)
                got_r.append(r)
                got_t.append(events.start[j])
            j -= 1
        k = len(got_r)
        if k:
            rows[b, length - k:] = got_r[::-1]
            gap[b, length - k:] = gap_bucket(t_s[b] - np.asarray(got_t[::-1]))
    return rows, gap


@dataclass
class QueryBatch:
    """Model inputs of ``B`` queries (see the module docstring for the shapes)."""
    seq: np.ndarray
    gap: np.ndarray
    long: np.ndarray
    target: np.ndarray
    t: Optional[np.ndarray] = None        # [B] query times (seconds)

    def __len__(self) -> int:
        return len(self.target)

    def take(self, idx) -> "QueryBatch":
        return QueryBatch(self.seq[idx], self.gap[idx], self.long[idx], self.target[idx],
                          None if self.t is None else self.t[idx])


def query_batch(history: Sessions, vocab: Vocab, user, stream, t_s, *, seq_len: int = 20,
                long_len: int = 100, distinct: bool = True) -> QueryBatch:
    """Inputs of the queries (user, t) with targets ``stream``; the history is ``history``'s rows
    that started before t: with ``distinct`` (the default, as served from Feast) the last
    ``seq_len`` distinct streams at their latest time, and ``long`` the same rows; else the last
    ``seq_len`` / ``long_len`` rows as they are."""
    user = np.asarray(user, np.int64)
    t_s = np.asarray(t_s, np.float64)
    lo, hi = history.before(user, t_s)
    if distinct:
        seq, gap = distinct_windows(history, vocab, lo, hi, t_s, seq_len)
        long = seq.copy()
    else:
        seq, gap = windows(history, vocab, lo, hi, t_s, seq_len)
        long, _ = windows(history, vocab, lo, hi, t_s, long_len, with_gap=False)
    return QueryBatch(seq=seq, gap=gap, long=long, target=vocab.rows(stream), t=t_s)


def training_queries(targets: Sessions, vocab: Vocab, *, history: Optional[Sessions] = None, seq_len: int = 20,
                     long_len: int = 100, min_history: int = 1, distinct: bool = True) -> QueryBatch:
    """One training query per session start of ``targets`` with at least ``min_history`` earlier
    sessions: target = the session's stream, history = ``history`` (default: ``targets``) before it."""
    rank = np.arange(len(targets)) - np.repeat(targets.offsets[:-1], np.diff(targets.offsets))
    idx = np.flatnonzero(rank >= min_history)
    return query_batch(history if history is not None else targets, vocab, targets.user[idx], targets.stream[idx],
                       targets.start[idx], seq_len=seq_len, long_len=long_len, distinct=distinct)


def events_as_rows(user, stream, ts_s) -> Sessions:
    """Every watch as its own row (no session collapse): the history of :func:`distinct_windows`."""
    return Sessions.from_watches(user, stream, ts_s, session_gap_s=-1.0)


def category_rows(vocab: Vocab, stream_ids, categories, universe=None) -> tuple[np.ndarray, int]:
    """``([N + 1] category row of each stream row (0 = unknown), number of categories)``: the
    categories of ``universe`` (default: those given) are rows ``1..C``."""
    categories = np.asarray(categories, dtype=np.int64)
    uniq = np.unique(categories if universe is None else np.asarray(universe, dtype=np.int64))
    out = np.zeros(len(vocab) + 1, np.int64)
    out[vocab.rows(stream_ids)] = np.searchsorted(uniq, categories) + 1
    return out, max(len(uniq), 1)


def stream_stats(vocab: Vocab, sessions: Sessions, user_ids, stream_ids) -> tuple[np.ndarray, np.ndarray]:
    """``(popularity [N + 1], stats [N + 1, 2])`` of the training window: sessions per stream, and
    the standardised log sessions / log distinct viewers (``user_ids`` x ``stream_ids`` watches);
    row 0 is zero."""
    n = len(vocab)
    pop = np.bincount(vocab.rows(sessions.stream), minlength=n + 1).astype(np.float64)
    pairs = pd.DataFrame({"u": np.asarray(user_ids, np.int64), "s": np.asarray(stream_ids, np.int64)}).drop_duplicates()
    distinct = np.bincount(vocab.rows(pairs["s"]), minlength=n + 1).astype(np.float64)
    stats = np.stack([np.log1p(pop), np.log1p(distinct)], axis=1)
    stats[1:] = (stats[1:] - stats[1:].mean(0)) / (stats[1:].std(0) + 1e-9)
    stats[0] = 0
    return pop, stats.astype(np.float32)


__all__ = ["GAP_BUCKETS", "gap_bucket", "Vocab", "Sessions", "windows", "distinct_windows", "QueryBatch",
           "query_batch", "training_queries", "events_as_rows", "category_rows", "stream_stats"]

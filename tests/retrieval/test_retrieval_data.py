"""Sessions and point-in-time histories (retrieval/data.py), the metrics with ties (retrieval/metrics.py)
and the channel merge (retrieval/candidates.py)."""
from __future__ import annotations

import numpy as np
import pytest


def test_consecutive_watches_of_one_stream_are_one_session():
    from retrieval.data import Sessions
    s = Sessions.from_watches([1, 1, 1, 1, 2, 2], [10, 10, 20, 10, 30, 10], [0, 600, 1200, 5000, 100, 200])
    assert s.user.tolist() == [1, 1, 1, 2, 2] and s.stream.tolist() == [10, 20, 10, 30, 10]
    assert s.start.tolist() == [0, 1200, 5000, 100, 200]
    assert s.offsets.tolist() == [0, 3, 5]


def test_a_query_sees_only_sessions_started_before_it():
    from retrieval.data import Sessions, Vocab, query_batch
    s = Sessions.from_watches([1, 1, 1, 2], [10, 20, 30, 10], [0, 1200, 5000, 100])
    v = Vocab([10, 20, 30])
    lo, hi = s.before([1, 1, 1, 2, 9], [0, 1200, 5001, 5000, 5])
    assert (hi - lo).tolist() == [0, 1, 3, 1, 0]                 # strictly before t; unknown user: none
    b = query_batch(s, v, [1, 1], [30, 20], [5000, 1200], seq_len=3, long_len=4, distinct=False)
    assert b.seq.tolist() == [[0, 1, 2], [0, 0, 1]]              # left-padded, latest last
    assert b.target.tolist() == [3, 2]
    assert b.gap[0, 2] > b.gap[1, 2]                             # a longer gap, a larger bucket
    assert b.long.tolist() == [[0, 0, 1, 2], [0, 0, 0, 1]]


def test_random_histories_never_hold_the_future():
    from retrieval.data import Sessions, Vocab, query_batch
    rng = np.random.default_rng(0)
    u, st, t = rng.integers(0, 20, 3000), rng.integers(0, 50, 3000), rng.integers(0, 10 ** 6, 3000)
    s = Sessions.from_watches(u, st, t)
    qu, qt = rng.integers(0, 25, 500), rng.integers(0, 10 ** 6, 500).astype(float)
    lo, hi = s.before(qu, qt)
    for i in range(500):
        mine = s.start[s.user == qu[i]]
        assert hi[i] - lo[i] == int((mine < qt[i]).sum())
        assert (s.user[lo[i]:hi[i]] == qu[i]).all() and (s.start[lo[i]:hi[i]] < qt[i]).all()
    b = query_batch(s, Vocab(st), qu, st[:500], qt, seq_len=5, long_len=10, distinct=False)
    assert ((b.seq > 0).sum(1) == np.minimum(hi - lo, 5)).all()


def test_distinct_histories_are_what_feast_serves_the_last_distinct_streams_at_their_latest_time():
    from retrieval.data import Vocab, events_as_rows, gap_bucket, query_batch
    ev = events_as_rows([1] * 5, [10, 20, 10, 30, 20], [0, 100, 200, 300, 400])
    v = Vocab([10, 20, 30])
    b = query_batch(ev, v, [1, 1], [30, 30], [350, 1000], seq_len=3)
    # at 350: 10 (last 200), 20 (100), 30 (300) -> oldest first: 20, 10, 30
    assert b.seq[0].tolist() == [2, 1, 3] and b.gap[0].tolist() == gap_bucket([250, 150, 50]).tolist()
    # at 1000: 30 (300), 10 (200) and 20 (400) -> 10, 30, 20
    assert b.seq[1].tolist() == [1, 3, 2] and (b.long == b.seq).all()
    b = query_batch(ev, v, [1], [30], [150], seq_len=3)
    assert b.seq[0].tolist() == [0, 1, 2]                      # left-padded


def test_metrics_break_ties_uniformly_in_expectation():
    from retrieval.metrics import from_ranks, rank_stats
    # all tied over 100 candidates: recall@10 = 0.1 exactly in expectation
    ab, ti = rank_stats(np.zeros((1, 100)), np.array([7]))
    m = from_ranks(ab, ti)
    assert m["recall@10"] == pytest.approx(0.1) and m["recall@50"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx(np.sum(1 / np.log2(np.arange(2, 12))) / 100, abs=1e-4)
    sc = np.array([[0.9, 0.5, 0.7], [0.1, 0.2, 0.3]])
    ab, ti = rank_stats(sc, np.array([1, 2]))
    assert ab.tolist() == [2, 0] and ti.tolist() == [0, 0]
    m = from_ranks(ab, ti, ks=(1, 3))
    assert m["recall@1"] == 0.5 and m["recall@3"] == 1.0 and m["ndcg@10"] == pytest.approx((0.5 + 1.0) / 2)
    ab, _ = rank_stats(sc, np.array([1, 2]), allowed=np.array([[False, True, True], [True, True, True]]))
    assert ab.tolist() == [1, 0]                                  # a masked candidate is not above


def test_merge_keeps_channel_order_dedupes_and_fills_to_the_budget():
    from retrieval.candidates import merge
    ids, src = merge(repeat=[5, 6], ann=np.array([6, 7, 8]), popular=[1, 5, 9, 10], budget=6)
    assert ids == [5, 6, 7, 8, 1, 9] and src == ["repeat", "repeat", "ann", "ann", "popular", "popular"]
    ids, src = merge(repeat=[], ann=None, popular=[3, 3, 4])
    assert ids == [3, 4] and src == ["popular", "popular"]

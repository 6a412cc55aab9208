"""retrieval.index.LiveIndex: exact on small sets, recall on the graph, upsert / remove / sync,
growth past capacity, and concurrent searches with updates (no timed assertions)."""
import threading
import time

import numpy as np
import pytest

from retrieval.index import LiveIndex


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(x, ids, q, k):
    sc = q @ x.T
    order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(sc, order, axis=1)


# exact_below=10**9: always numpy; exact_below=200: the hnswlib graph from 200 vectors on
BOTH = pytest.mark.parametrize("exact_below", [10**9, 200], ids=["numpy", "graph"])


def test_small_index_is_exact():
    rng = np.random.default_rng(0)
    x, ids = unit(rng, 500, 16), rng.choice(10**9, 500, replace=False).astype(np.int64)
    ix = LiveIndex(16)
    ix.upsert(ids, x)
    q = unit(rng, 20, 16)
    for k in (1, 10, 500, 800):
        got_ids, got_sc = ix.search(q, k)
        want_ids, want_sc = exact(x, ids, q, min(k, 500))
        assert got_ids.shape == (20, min(k, 500)) and got_ids.dtype == np.int64
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_allclose(got_sc, want_sc, rtol=1e-5, atol=1e-5)
    one_ids, one_sc = ix.search(q[0], 5)
    assert one_ids.shape == (5,) and np.all(np.diff(one_sc) <= 0)
    np.testing.assert_array_equal(one_ids, want_ids[0, :5])


def test_empty_and_bad_input():
    ix = LiveIndex(8)
    ids, sc = ix.search(np.ones(8, np.float32), 10)
    assert ids.shape == (0,) and sc.shape == (0,) and len(ix) == 0
    with pytest.raises(ValueError):
        ix.search(np.ones(7, np.float32), 10)
    with pytest.raises(ValueError):
        ix.upsert([1, 2], np.ones((2, 7), np.float32))
    with pytest.raises(ValueError):
        ix.upsert([1], np.full((1, 8), np.nan, np.float32))
    assert ix.remove([5]) == 0


def test_recall_at_100_on_20k_random_vectors():
    rng = np.random.default_rng(1)
    n, d = 20_000, 64
    x = unit(rng, n, d)
    ids = np.arange(n, dtype=np.int64) * 11 + 5
    ix = LiveIndex(d, capacity=n, threads=1)  # 1 thread: a deterministic graph
    ix.upsert(ids, x)
    assert ix._graph is not None  # the graph answers, not the exact path
    q = unit(rng, 100, d)
    got, scores = ix.search(q, 100)
    want, _ = exact(x, ids, q, 100)
    rec = np.mean([len(np.intersect1d(g, w)) / 100 for g, w in zip(got, want)])
    assert rec >= 0.95, rec
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # the scores are the inner products of the returned ids
    pos = {int(i): r for r, i in enumerate(ids)}
    np.testing.assert_allclose(scores[0], x[[pos[int(i)] for i in got[0]]] @ q[0], atol=1e-5)


@BOTH
def test_upsert_replaces(exact_below):
    rng = np.random.default_rng(2)
    x, ids = unit(rng, 400, 16), np.arange(400, dtype=np.int64)
    ix = LiveIndex(16, exact_below=exact_below)
    assert ix.upsert(ids, x) == 400
    v = x[7].copy()
    assert ix.search(v, 1)[0][0] == 7
    assert ix.upsert([7], -v) == 0  # replaced, not added
    assert len(ix) == 400
    np.testing.assert_array_equal(ix.vectors([7])[0], -v)
    got, _ = ix.search(v, 400)
    assert got[-1] == 7 and np.sum(got == 7) == 1  # now the worst match, once
    assert ix.search(-v, 1)[0][0] == 7
    # duplicate ids in one call: the last wins
    ix.upsert([9, 9], np.stack([x[9], -x[9]]))
    np.testing.assert_array_equal(ix.vectors([9])[0], -x[9])
    assert len(ix) == 400


@BOTH
def test_removed_ids_are_never_returned(exact_below):
    rng = np.random.default_rng(3)
    x, ids = unit(rng, 600, 16), np.arange(600, dtype=np.int64) + 1000
    ix = LiveIndex(16, exact_below=exact_below)
    ix.upsert(ids, x)
    gone = ids[::2]
    assert ix.remove(np.concatenate([gone, [5, 6]])) == 300  # absent ids ignored
    assert len(ix) == 300 and set(ix.ids().tolist()) == set(ids[1::2].tolist())
    got, _ = ix.search(unit(rng, 50, 16), 300)
    assert not np.isin(got, gone).any()
    assert all(len(set(r.tolist())) == len(r) for r in got)
    for v in x[::2][:20]:  # a removed vector's own query does not find it
        assert not np.isin(ix.search(v, 10)[0], gone).any()


@BOTH
def test_readding_removed_ids_then_removing_again(exact_below):
    """Remove / re-add the same ids many times next to other churn: every removal still works
    (hnswlib's replace_deleted loses a re-used label from its lookup table; the index must not
    fall into that)."""
    rng = np.random.default_rng(4)
    x, ids = unit(rng, 500, 16), np.arange(500, dtype=np.int64)
    ix = LiveIndex(16, exact_below=exact_below)
    ix.upsert(ids, x)
    fresh = 10_000
    for rnd in range(30):
        s = rng.choice(ids, 20, replace=False)
        ix.remove(s)
        extra = np.arange(fresh, fresh + 10, dtype=np.int64)
        fresh += 10
        ix.upsert(extra, unit(rng, 10, 16))
        ix.upsert(s, x[s])
        ix.remove(extra[:5])
    final_gone = ids[:250]
    assert ix.remove(final_gone) == 250
    q = np.concatenate([x[:250], unit(rng, 20, 16)])
    got, _ = ix.search(q, 50)
    assert not np.isin(got, final_gone).any()
    assert len(ix) == 250 + 30 * 5


def test_sync_matches_live_set():
    rng = np.random.default_rng(5)
    x = unit(rng, 3000, 16)
    ix = LiveIndex(16, exact_below=1000)
    live = {i: x[i] for i in range(1500)}
    st = ix.sync(live)
    assert st == {"added": 1500, "removed": 0, "updated": 0, "size": 1500}
    # streams 0..499 end, 1500..2199 go live, 600 gets a new vector
    live = {i: x[i] for i in range(500, 2200)}
    live[600] = -x[600]
    st = ix.sync(live)
    assert st == {"added": 700, "removed": 500, "updated": 1, "size": 1700}
    assert set(ix.ids().tolist()) == set(live)
    np.testing.assert_array_equal(ix.vectors([600])[0], -x[600])
    got, _ = ix.search(x[:500], 20)
    assert not np.isin(got, np.arange(500)).any()
    assert ix.search(x[2100], 1)[0][0] == 2100
    # the (ids, vectors) form; an unchanged sync changes nothing
    keys = np.array(sorted(live), np.int64)
    assert ix.sync((keys, np.stack([live[int(k)] for k in keys]))) == {
        "added": 0, "removed": 0, "updated": 0, "size": 1700}
    assert ix.sync({}) == {"added": 0, "removed": 1700, "updated": 0, "size": 0}
    assert len(ix) == 0 and ix.search(x[0], 5)[0].shape == (0,)


def test_grows_past_capacity():
    rng = np.random.default_rng(6)
    x, ids = unit(rng, 5000, 16), np.arange(5000, dtype=np.int64) * 3
    ix = LiveIndex(16, capacity=16, exact_below=1000)
    for s in range(0, 5000, 700):
        ix.upsert(ids[s:s + 700], x[s:s + 700])
    assert len(ix) == 5000 and ix._graph is not None
    assert ix._graph.get_max_elements() >= 5000
    assert set(ix.ids().tolist()) == set(ids.tolist())
    top1 = ix.search(x, 1)[0][:, 0]
    assert np.mean(top1 == ids) >= 0.99  # each vector finds itself


def test_concurrent_searches_and_updates():
    """3 threads search while 2 write for ~2 s: no exception, only valid ids, and an id whose
    removal had completed before a search started is never in that search's answer."""
    rng = np.random.default_rng(7)
    d, n = 16, 3000
    x = unit(rng, n, d)
    ix = LiveIndex(d, exact_below=500, write_chunk=8)
    ix.upsert(np.arange(n, dtype=np.int64), x)
    gone: set[int] = set()          # removals that have completed; never re-added
    gone_lock = threading.Lock()
    ever = set(range(n))            # every id ever added
    ever_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    searches = [0]

    def searcher(seed):
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with gone_lock:
                    before = frozenset(gone)
                q = unit(r, 4, d)
                k = int(r.integers(1, 200))
                got, sc = ix.search(q, k)
                assert got.shape[0] == 4 and got.shape[1] <= k
                flat = got.ravel().tolist()
                assert not before.intersection(flat), before.intersection(flat)
                with ever_lock:
                    assert ever.issuperset(flat)
                for row, srow in zip(got, sc):
                    assert len(set(row.tolist())) == len(row)
                    assert np.all(np.diff(srow) <= 1e-6)
                searches[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            stop.set()

    def remover():  # permanently removes ids 0..1499 in small batches
        try:
            for s in range(0, 1500, 5):
                if stop.is_set():
                    break
                batch = np.arange(s, s + 5, dtype=np.int64)
                ix.remove(batch)
                with gone_lock:
                    gone.update(batch.tolist())
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    def churner():  # fresh ids go live and end; stable ids get new vectors
        r = np.random.default_rng(99)
        nxt = 100_000
        try:
            while not stop.is_set():
                new = np.arange(nxt, nxt + 20, dtype=np.int64)
                nxt += 20
                with ever_lock:
                    ever.update(new.tolist())
                ix.upsert(new, unit(r, 20, d))
                stable = r.integers(1500, n, 10)
                ix.upsert(stable, unit(r, 10, d))
                ended = new[:10]
                ix.remove(ended)
                with gone_lock:
                    gone.update(ended.tolist())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=remover), threading.Thread(target=churner)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, repr(errors[0])
    assert searches[0] > 0
    present = set(ix.ids().tolist())
    assert not present & gone
    assert present.issuperset(range(1500, n))
    assert len(ix) == len(present)


def test_sync_while_searching():
    """The serving shape: a sync loop (streams end, new ones go live) next to searches; an
    ended stream is never returned by a search that started after its sync returned."""
    rng = np.random.default_rng(8)
    d = 16
    ix = LiveIndex(d, exact_below=300)
    live = {i: v for i, v in enumerate(unit(rng, 1000, d))}
    ix.sync(live)
    ended: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher(seed):
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with lock:
                    before = frozenset(ended)
                got, _ = ix.search(unit(r, 2, d), 50)
                assert not before.intersection(got.ravel().tolist())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    def syncer():
        nxt = 1000
        try:
            while not stop.is_set():
                out = sorted(live)[:25]
                for i in out:
                    del live[i]
                for i in range(nxt, nxt + 25):
                    live[i] = unit(rng, 1, d)[0]
                nxt += 25
                st = ix.sync(dict(live))
                assert st["removed"] == 25 and st["added"] == 25
                with lock:
                    ended.update(out)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=syncer))
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, repr(errors[0])
    assert set(ix.ids().tolist()) == set(live)

"""feature_repo.coalesce: concurrent push tasks share pushes, each returns after its entities landed."""
import threading
import time

import pytest

from feature_repo.coalesce import PushCoalescer


def test_concurrent_submits_share_pushes_and_each_waits_for_a_push_that_covers_it():
    pushed, started = [], []

    def push(streams, users, at):
        started.append(time.monotonic())
        time.sleep(0.2)
        pushed.append((set(streams), set(users), time.monotonic()))
        return len(streams) + len(users)
    c = PushCoalescer(push)
    returned = {}

    def task(i):
        t0 = time.monotonic()
        c.submit([i], [1000 + i])
        returned[i] = (t0, time.monotonic())
    threads = [threading.Thread(target=task, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert len(returned) == 20
    assert len(pushed) <= 5                              # 20 tasks over ~0.4 s: a few pushes, not 20
    for i, (t0, t1) in returned.items():
        # some push that STARTED after the task registered covered it, and finished before it returned
        assert any(i in s and 1000 + i in u and start >= t0 - 1e-3 and end <= t1
                   for (s, u, end), start in zip(pushed, started)), i


def test_a_failed_push_fails_its_waiters_and_the_next_push_runs():
    calls = []

    def push(streams, users, at):
        calls.append(streams)
        if len(calls) == 1:
            raise ConnectionError("online store away")
        return 1
    c = PushCoalescer(push)
    with pytest.raises(ConnectionError):
        c.submit([1], [])
    assert c.submit([2], [])["generation"] == 1 and calls == [[1], [2]]

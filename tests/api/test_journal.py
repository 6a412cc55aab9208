"""The impression journal (api.journal): durable before the answer, drained in batches, bounded."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from api.journal import ImpressionJournal, JournalFull, read_segment

ROOT = Path(__file__).resolve().parents[2]


def _events(rid, n=3):
    return [{"event_id": f"imp-{rid}-{p}", "user_id": 1, "ts": "2026-01-01T00:00:00+00:00", "type": "impression",
             "stream_id": 5, "request_id": rid, "position": p, "page": "live_tab"} for p in range(1, n + 1)]


class Sink:
    def __init__(self):
        self.batches, self.fail = [], False

    def __call__(self, events, version):
        if self.fail:
            raise ConnectionError("event log away")
        self.batches.append((version, [e["event_id"] for e in events]))

    @property
    def ids(self):
        return [i for _, b in self.batches for i in b]


def test_append_then_flush_writes_each_answer_once_grouped_by_model(tmp_path):
    sink = Sink()
    j = ImpressionJournal(tmp_path, sink, flush_interval_s=60)
    j.append(_events("a"), "ranker:1")
    j.append(_events("b", 2), "ranker:1")
    j.append(_events("c", 1), "gbdt:2")
    assert j.backlog == 6 and sink.batches == []
    assert j.flush() == 6
    assert sink.batches == [("ranker:1", ["imp-a-1", "imp-a-2", "imp-a-3", "imp-b-1", "imp-b-2"]),
                            ("gbdt:2", ["imp-c-1"])]
    assert j.backlog == 0 and list(tmp_path.glob("*.journal")) == []
    assert j.flush() == 0
    j.close()


def test_the_event_log_away_keeps_the_impressions_and_a_full_backlog_drops_with_a_reason(tmp_path):
    sink = Sink()
    sink.fail = True
    j = ImpressionJournal(tmp_path, sink, max_events=5, flush_interval_s=60)
    j.append(_events("a"), None)
    with pytest.raises(ConnectionError):
        j.flush()
    assert j.backlog == 3
    with pytest.raises(JournalFull, match="backlog full"):
        j.append(_events("b"), None)              # 3 + 3 > 5: nothing of it is written
    assert j.stats["dropped"] == 3
    sink.fail = False
    assert j.flush() == 3 and sink.ids == ["imp-a-1", "imp-a-2", "imp-a-3"]
    j.append(_events("c"), None)                 # room again
    j.close()                                    # close drains
    assert sink.ids[-3:] == ["imp-c-1", "imp-c-2", "imp-c-3"]


def test_segments_of_a_dead_process_are_drained_and_a_torn_line_skipped(tmp_path):
    orphan = tmp_path / "00000000000000000001-999999-deadbeef.journal"
    good = json.dumps({"v": "ranker:1", "e": _events("x", 2)})
    orphan.write_text(good + "\n" + '{"v": "ranker:1", "e": [{"event_id": "imp-y-1"')     # killed mid-write
    assert [len(e) for _, e in read_segment(orphan)] == [2]
    sink = Sink()
    j = ImpressionJournal(tmp_path, sink, flush_interval_s=60)
    j.append(_events("live"), None)              # our own active segment is not an orphan
    assert j.drain_orphans() == 2
    assert sink.ids == ["imp-x-1", "imp-x-2"] and not orphan.exists()
    j.close()


def test_a_segment_held_by_a_live_process_is_not_taken(tmp_path):
    code = ("import sys, time; sys.path.insert(0, %r); from api.journal import ImpressionJournal;"
            "j = ImpressionJournal(%r, lambda e, v: None, flush_interval_s=60);"
            "j.append([{'event_id': 'imp-o-1'}], None); print('ready', flush=True); time.sleep(60)"
            % (str(ROOT), str(tmp_path)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sink = Sink()
        j = ImpressionJournal(tmp_path, sink, flush_interval_s=60)
        assert j.drain_orphans() == 0 and sink.ids == []
        proc.kill()                                  # kill -9: its flock goes with it
        proc.wait()
        assert j.drain_orphans() == 1 and sink.ids == ["imp-o-1"]
        j.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_new_segment_taken_by_another_drain_between_open_and_lock_loses_nothing(tmp_path, monkeypatch):
    """The race bench/load.py hit (80 impressions lost): process B's orphan drain opened and locked
    A's brand-new segment before A's flock, found it empty and unlinked it; A then locked the
    unlinked inode and journaled answers into it. A new segment is checked after its lock."""
    import api.journal as journal_mod
    sink_a, sink_b = Sink(), Sink()
    a = ImpressionJournal(tmp_path, sink_a, flush_interval_s=60)
    b = ImpressionJournal(tmp_path, sink_b, flush_interval_s=60)
    real_flock = journal_mod.fcntl.flock
    state = {"raced": 0}

    def flock(fd, op):
        if state["raced"] == 0:               # A's first lock: B's drain gets in first
            state["raced"] = 1
            b.drain_orphans()
        return real_flock(fd, op)
    monkeypatch.setattr(journal_mod.fcntl, "flock", flock)
    a.append(_events("r1"), "v")
    a.append(_events("r2"), "v")
    monkeypatch.setattr(journal_mod.fcntl, "flock", real_flock)
    assert state["raced"] == 1
    assert a.flush() == 6
    assert sorted(sink_a.ids + sink_b.ids) == sorted(i for r in ("r1", "r2") for i in
                                                      [f"imp-{r}-{p}" for p in (1, 2, 3)])
    a.close()
    b.close()


def test_fsync_policy_is_checked(tmp_path):
    with pytest.raises(ValueError, match="fsync"):
        ImpressionJournal(tmp_path, Sink(), fsync="sometimes")
    j = ImpressionJournal(tmp_path, Sink(), fsync="always", flush_interval_s=60)
    j.append(_events("a"), None)
    assert j.flush() == 3
    j.close()


def test_a_full_journal_does_not_fail_recommend(make_app, world, db):
    app = make_app(world.with_(journal_max_events=3, journal_flush_s=60.0, journal_dir=world.home / "journal-full"))
    client = app.test_client()
    first = client.post("/v1/recommend", json={"user_id": 1, "k": 3}).get_json()
    assert first["impressions"] == {"journaled": True, "count": 3}
    r = client.post("/v1/recommend", json={"user_id": 2, "k": 3})
    assert r.status_code == 200 and len(r.get_json()["items"]) == 3
    imp = r.get_json()["impressions"]
    assert imp["journaled"] is False and imp["dropped"] == 3 and "backlog full" in imp["reason"]
    app.extensions["streamrank"].journal.flush()
    assert db.count("impressions", "WHERE request_id = :r", r=first["request_id"]) == 3
    assert db.count("impressions", "WHERE request_id = :r", r=r.get_json()["request_id"]) == 0


class _Count:
    def __init__(self, url):
        self.url = url

    def count(self, table: str, where: str = "") -> int:
        from sqlalchemy import text

        from store.db import get_engine
        with get_engine(self.url).connect() as conn:
            return int(conn.execute(text(f"SELECT COUNT(*) FROM {table} {where}")).scalar())


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gunicorn(settings, port, log):
    env = dict(os.environ, **settings.with_(port=port).to_env())
    from streamrank.cli import serve_argv
    argv = serve_argv(settings.with_(port=port), workers=2, threads=2, timeout_s=120, access_log=False)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
                if r.status == 200:
                    return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)


def test_sigkill_of_gunicorn_loses_no_impression_that_was_in_an_answer(world, tmp_path):
    """Real gunicorn (2 workers), answers arriving, kill -9 of master and workers; after a restart
    every impression of every answer a client received is in the event log, exactly once."""
    import sqlite3
    src = sqlite3.connect(world.database_url.split("///", 1)[1])     # a copy of the world's log:
    dst = sqlite3.connect(tmp_path / "log.db")                       # thousands of impressions
    src.backup(dst)                                                  # stay out of other tests
    src.close()
    dst.close()
    settings = world.with_(api_key=None, journal_dir=tmp_path / "journal", journal_flush_s=30.0,
                           database_url=f"sqlite:///{tmp_path / 'log.db'}")
    db = _Count(settings.database_url)
    log = open(tmp_path / "gunicorn.log", "ab")
    port = _free_port()
    proc = _gunicorn(settings, port, log)
    answered, failed, stop = [], [], threading.Event()

    def client():
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while not stop.is_set():
            try:
                conn.request("POST", "/v1/recommend", body=json.dumps({"user_id": i % 50, "k": 5}),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = json.loads(resp.read())
            except (OSError, http.client.HTTPException, ValueError):
                return                                  # the server died under us
            if resp.status == 200:
                answered.append((body["request_id"], len(body["items"])))
            else:
                failed.append((resp.status, body))
            i += 1
    threads = [threading.Thread(target=client) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(3.0)
        os.killpg(proc.pid, signal.SIGKILL)             # master and workers, mid-traffic
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(answered) >= 10, failed[:3]
        ids = [rid for rid, _ in answered]
        q = "WHERE request_id IN (" + ",".join(f"'{r}'" for r in ids) + ")"
        before = db.count("impressions", q)
        assert before < sum(n for _, n in answered)     # they were in the journal only (flush every 30 s)
        proc = _gunicorn(settings.with_(journal_flush_s=0.2), port, log)   # restart: readyz drains the orphans
        deadline = time.monotonic() + 30
        want = sum(n for _, n in answered)
        while db.count("impressions", q) < want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert db.count("impressions", q) == want
        assert db.count("events", "WHERE type = 'impression' AND " + q[6:]) == want     # once each
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()


def test_every_logged_impression_carries_its_policy_and_propensity(make_app, world, db):
    """The deterministic ranking's slots are logged with propensity 1.0 and the policy that chose
    them (the popularity fallback here: no model is active in this module's world)."""
    from sqlalchemy import text

    from store.db import get_engine
    app = make_app()
    body = app.test_client().post("/v1/recommend", json={"user_id": 7, "k": 4}).get_json()
    app.extensions["streamrank"].journal.flush()
    with get_engine(world.database_url).connect() as conn:
        rows = conn.execute(text("SELECT e.propensity, e.policy, i.propensity, i.policy FROM events e JOIN impressions i "
                                 "ON i.event_id = e.event_id WHERE e.request_id = :r"), {"r": body["request_id"]}).all()
    assert len(rows) == len(body["items"]) > 0
    policy = "popularity" if body["model"]["name"] == "popularity" else "ranked"
    assert all(tuple(r) == (1.0, policy, 1.0, policy) for r in rows)

"""Faults the API survives, with the real parts: the Feast online store (SQLite) locked by a
writer that does not let go. Every recommend still answers 200 at once — popularity from the
snapshot, ``"degraded"`` saying why — instead of waiting out the store's timeout; the model comes
back by itself when the store is readable again."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


def _post(client, **body):
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def test_a_locked_online_store_degrades_to_popularity_and_recovers(world, make_app, register_gbdt, live_ids):
    register_gbdt()
    app = make_app()
    client = app.test_client()
    rt = app.extensions["streamrank"]
    rt.store_breaker.retry_s = 1.0
    assert _post(client, user_id=2, k=3)["model"]["name"] == "gbdt"         # snapshot and model warm

    db = Path(world.feast_repo) / "online.db"
    locker = sqlite3.connect(db, timeout=5)
    locker.execute("BEGIN EXCLUSIVE")                  # a writer holding the store: every read blocks
    try:
        times, answers = [], []
        for user in range(1, 11):
            t0 = time.monotonic()
            answers.append(_post(client, user_id=user, candidates=live_ids[:5], k=5))
            times.append(time.monotonic() - t0)
        for out in answers:
            assert out["model"]["name"] == "popularity" and out["model"]["fallback"] is True
            assert "database is locked" in out["model"]["degraded"] or "unreadable" in out["model"]["degraded"]
            assert len(out["items"]) == 5
        # one request waits the store's 1 s timeout; the others skip it while it is known down
        assert sum(times) < 4.0, times
    finally:
        locker.rollback()
        locker.close()
    time.sleep(1.2)                                    # the breaker's retry interval
    out = _post(client, user_id=3, k=3)
    assert out["model"]["name"] == "gbdt" and "degraded" not in out["model"], out


class _TcpProxy:
    """127.0.0.1:<port> → target, with a switch: ``cut()`` drops every connection and refuses new
    ones (the database host gone), ``restore()`` accepts again on the same port."""

    def __init__(self, target: tuple):
        import socket
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._conns: list = []
        self._listener = None
        self._lock = threading.Lock()

    def restore(self) -> "_TcpProxy":
        import socket
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        self._open = True
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def _accept(self, ls) -> None:
        import socket
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            if not self._open:
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket
        self._open = False
        try:
            self._listener.shutdown(socket.SHUT_RDWR)     # wakes the accept() blocked in its thread
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_an_unreachable_event_log_keeps_recommend_answering_and_loses_no_impression(tmp_path, postgres):
    """The event log's PostgreSQL goes away (its connections cut, new ones refused) under a
    running API: recommend keeps answering 200 from the snapshot and the loaded state, its
    impressions wait in the journal; POST /v1/events answers 503 with Retry-After; when the
    database is back every impression of those answers reaches the event log."""
    import sqlalchemy as sa

    from api import close_app, create_app
    from feature_repo.statistics_job import run_statistics
    from store.db import get_engine
    from store.schema import Base
    from store.settings import Settings
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate
    pg = postgres
    direct = get_engine(pg)
    Base.metadata.drop_all(direct)
    Base.metadata.create_all(direct)
    host_port = pg.split("@", 1)[1].split("/", 1)[0]
    proxy = _TcpProxy((host_port.split(":")[0], int(host_port.split(":")[1]))).restore()
    url = pg.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/")
    settings = Settings(home=tmp_path / "var", database_url=url, journal_flush_s=0.1).ensure_dirs()
    from datetime import datetime, timezone
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    ingest_source(settings, simulate(SimConfig(seed=5, n_users=60, n_streams=12, n_items=40, days=1,
                                               requests_per_day=80, end=end)), progress=False)
    run_statistics(settings, progress=False)
    from store.ingest import live_stream_ids, upsert_catalog
    import pandas as pd
    upsert_catalog(url, live_windows=pd.DataFrame({"stream_id": [1, 2, 3], "start_ts": [end] * 3,
                                                   "end_ts": [end + pd.Timedelta(hours=3)] * 3}))
    live = live_stream_ids(url, datetime.now(timezone.utc))
    assert len(live) >= 3
    app = create_app(settings)
    app.config.update(TESTING=True, SNAPSHOT_BACKGROUND=False, MODEL_CHECK_S=0.0)
    client = app.test_client()
    try:
        assert _post(client, user_id=1, k=3)["impressions"]["journaled"] is True       # all warm
        proxy.cut()
        answers = [_post(client, user_id=u, k=3) for u in range(2, 12)]
        for out in answers:
            assert len(out["items"]) == 3 and out["impressions"]["journaled"] is True
        r = client.post("/v1/events", json={"events": [{"event_id": "during-outage", "user_id": 1, "type": "click",
                                                         "ts": datetime.now(timezone.utc).isoformat(),
                                                         "stream_id": live[0]}]})
        assert r.status_code == 503 and r.headers.get("Retry-After") == "5", r.get_data(as_text=True)
        assert r.get_json()["error"] == "database_unavailable"
        want = {f"imp-{out['request_id']}-{it['position']}" for out in answers for it in out["items"]}
        proxy.restore()
        deadline = time.monotonic() + 30
        while True:
            with direct.connect() as conn:
                got = {row[0] for row in conn.execute(sa.text("SELECT event_id FROM events WHERE event_id LIKE 'imp-%'"))}
            if want <= got:
                break
            assert time.monotonic() < deadline, f"{len(want - got)} impressions never reached the event log"
            time.sleep(0.3)
    finally:
        close_app(app)
        proxy.cut()
        Base.metadata.drop_all(direct)


def test_redis_restarted_under_traffic_loses_no_push_and_no_answer(tmp_path):
    """Redis (broker, result backend and Feast online store) is killed and restarted empty while
    recommends and event batches keep coming: no recommend gets a 5xx (degraded popularity while
    the store is away), every batch is acknowledged, and the batches accepted while Redis was down
    are pushed once it is back (their outbox rows re-sent by the real worker's watchdog)."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    from datetime import datetime, timezone

    import pytest

    from api import close_app, create_app
    from feature_repo.online import OnlineFeatures
    from feature_repo.statistics_job import run_statistics
    from store import outbox
    from store.ingest import live_stream_ids
    from store.settings import Settings
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate
    from streamrank.cli import worker_argv
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("redis-server is required in CI")
        pytest.skip("no redis-server binary")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def start_redis():
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return proc
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    redis_proc = start_redis()
    base = f"redis://127.0.0.1:{port}"
    settings = Settings(home=tmp_path / "var", broker_url=f"{base}/0", result_backend=f"{base}/0",
                        feast_online=f"{base}/1", job_lease_s=2.0).ensure_dirs()
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    ingest_source(settings, simulate(SimConfig(seed=9, n_users=60, n_streams=12, n_items=40, days=1,
                                               requests_per_day=80, end=end)), progress=False)
    run_statistics(settings, progress=False)
    live = live_stream_ids(settings.database_url, datetime.now(timezone.utc))
    if not live:
        import pandas as pd

        from store.ingest import upsert_catalog
        upsert_catalog(settings.database_url, live_windows=pd.DataFrame(
            {"stream_id": [1, 2, 3], "start_ts": [end] * 3, "end_ts": [end + pd.Timedelta(hours=3)] * 3}))
        live = live_stream_ids(settings.database_url, datetime.now(timezone.utc))
    env = {**os.environ, **settings.to_env()}
    wlog = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(worker_argv("realtime,default", "threads", 4, "faults"), env=env, stdout=wlog,
                              stderr=subprocess.STDOUT, start_new_session=True)
    app = create_app(settings)
    app.config.update(TESTING=True, SNAPSHOT_BACKGROUND=False, MODEL_CHECK_S=0.0, BROKER_TIMEOUT_S=0.5)
    app.extensions["streamrank"].store_breaker.retry_s = 0.5
    client = app.test_client()
    statuses, stop = [], threading.Event()

    def traffic():
        c = app.test_client()
        u = 0
        while not stop.is_set():
            u += 1
            statuses.append(c.post("/v1/recommend", json={"user_id": u % 50, "k": 3}).status_code)
            time.sleep(0.02)

    def batch(tag, n=3):
        now = datetime.now(timezone.utc)
        evs = [{"event_id": f"{tag}-{i}", "user_id": 90_000 + i + (100 if tag == "down" else 0), "type": "click",
                "ts": now.isoformat(), "stream_id": live[i % len(live)]} for i in range(n)]
        r = client.post("/v1/events", json={"events": evs})
        assert r.status_code == 200, r.get_data(as_text=True)
        return evs, r.get_json()

    t = threading.Thread(target=traffic, daemon=True)
    try:
        assert _post(client, user_id=1, k=3)["items"]
        t.start()
        _, up = batch("up")
        assert up["push_enqueued"] is True
        redis_proc.send_signal(signal.SIGKILL)
        redis_proc.wait(10)
        time.sleep(1.0)
        down_events, down = batch("down")
        assert down["inserted"] == 3 and down["push_enqueued"] is False     # committed, push not sent
        time.sleep(1.0)
        redis_proc = start_redis()                                           # back, and empty
        online = OnlineFeatures(settings)
        deadline = time.monotonic() + 90
        for ev in down_events:
            while list(online.user_columns(ev["user_id"], [ev["stream_id"]], [None])["recent_streams"][0] or []) \
                    != [ev["stream_id"]]:
                assert time.monotonic() < deadline, "a batch accepted while Redis was down was never pushed"
                time.sleep(0.3)
        while outbox.pending(settings.database_url):
            assert time.monotonic() < deadline, outbox.pending(settings.database_url)
            time.sleep(0.3)
        stop.set()
        t.join(10)
        assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    finally:
        stop.set()
        close_app(app)
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        wlog.close()
        redis_proc.kill()

"""The production shape, booted (issue 17 item 5): the repo's ``Procfile`` is parsed and each of its
processes is started as it stands (``/bin/sh -c LINE``, its own process group, configured by
STREAMRANK_* variables only) on PostgreSQL (event log, registry, job runs) and Redis (Celery broker
and results, Feast online store):

(a) events POSTed to the API (gunicorn, 2 workers) are pushed to the online store by the real-time
    worker (the user's recent streams), and the statistics job that beat schedules counts them: a
    stream with no history is first in /v1/recommend's popularity order afterwards, with exactly
    the clicks POSTed;
(b) beat on a short schedule (STREAMRANK_BEAT_SCHEDULE, periods of PERIOD_S = the statistics job's
    key period STREAMRANK_STATS_BUCKET_S): one job run per period, no period skipped, as many runs
    as beat sent;
(c) SIGTERM to every process group (as honcho / foreman send it): each process exits with status 0
    within STOP_S and no process of any group (or carrying the run's STREAMRANK_HOME) is left.

Needs STREAMRANK_TEST_REDIS and STREAMRANK_TEST_POSTGRES (.ci/run sets both); skipped without them.
It uses its own PostgreSQL database (created and dropped here: other tests drop and recreate the
tables of streamrank_test) and Redis databases 2 and 3 (tests/workers uses 5-14, tests/feature_repo
4 and 15). `streamrank run`'s own SIGTERM handling is tests/streamrank/test_run.py.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"
PERIOD_S = 5                   # beat's statistics period in this test, = the job's key period
STOP_S = 30                    # every process must be gone this long after SIGTERM
REDIS_DBS = (2, 3)             # broker + results, Feast online store
API_KEY = "procfile-test-key"
NEW_STREAM = 900               # live now, no history: popularity 0 until the POSTed clicks count
USER = 70_000                  # not in the simulated world (60 users)
SENT = "Scheduler: Sending due task statistics-hourly"
LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")       # honcho's and foreman's Procfile line


def parse_procfile(path: Path = PROCFILE) -> dict:
    """name -> command, as a Procfile runner reads it (other lines are ignored)."""
    out = {}
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        if m:
            assert m.group(1) not in out, f"process type {m.group(1)} twice"
            out[m.group(1)] = m.group(2).strip()
    return out


# ----------------------------------------------------------------------------- without servers
def test_the_procfile_lines_are_streamrank_commands_covering_every_queue():
    from streamrank.cli import build_parser
    from workers.celery_app import TASK_ROUTES
    procs = parse_procfile()
    assert set(procs) == {"api", "worker-realtime", "worker-training", "beat"}
    args = {}
    for name, cmd in procs.items():
        argv = shlex.split(cmd)
        assert argv[:2] == ["exec", "streamrank"], cmd       # exec: the runner's SIGTERM reaches the program
        args[name] = build_parser().parse_args(argv[2:])
    assert args["api"].command == "serve" and args["api"].workers == 2 and not args["api"].dev
    assert args["beat"].command == "beat"
    rt, tr = args["worker-realtime"], args["worker-training"]
    assert rt.command == tr.command == "worker" and rt.name != tr.name
    assert set(rt.queues.split(",")) == {"realtime", "default"} and rt.pool == "threads"
    assert tr.queues == "training" and tr.pool == "solo"          # torch: never prefork (NOTES.md)
    routed = {r["queue"] for r in TASK_ROUTES.values()} | {"default"}
    assert routed == set(rt.queues.split(",")) | set(tr.queues.split(","))


def test_beat_schedule_override_keeps_the_default_and_aligns_periods():
    from celery.schedules import crontab

    from store.settings import Settings
    from workers.celery_app import BEAT_SCHEDULE, aligned_every, beat_schedule, celery_config
    assert beat_schedule("") == BEAT_SCHEDULE
    conf = celery_config(Settings.from_env({}, home=Path("/nonexistent")))
    assert conf["beat_schedule"] == BEAT_SCHEDULE
    assert BEAT_SCHEDULE["statistics-hourly"]["schedule"] == crontab(minute=5)
    short = beat_schedule(f"statistics-hourly={PERIOD_S}, gbdt-daily=off")
    assert "gbdt-daily" not in short and "gbdt-daily" in BEAT_SCHEDULE        # the default is not mutated
    assert short["statistics-hourly"]["task"] == BEAT_SCHEDULE["statistics-hourly"]["task"]
    assert short["ranker-daily"] == BEAT_SCHEDULE["ranker-daily"]
    env = Settings.from_env({"STREAMRANK_BEAT_SCHEDULE": "recover-jobs=off"}, home=Path("/nonexistent"))
    assert "recover-jobs" not in celery_config(env)["beat_schedule"]
    for bad in ("nope=5", "statistics-hourly", "statistics-hourly=0", "statistics-hourly=soon"):
        with pytest.raises(ValueError, match="STREAMRANK_BEAT_SCHEDULE"):
            beat_schedule(bad)

    clock = [datetime(2026, 1, 1, 0, 0, 7, tzinfo=timezone.utc)]
    every = aligned_every(PERIOD_S, nowfun=lambda: clock[0])
    t = lambda s: datetime(2026, 1, 1, 0, 0, 0, tzinfo=timezone.utc) + timedelta(seconds=s)   # noqa: E731
    assert every.is_due(t(4.9)) == (True, 3.0)            # last run in the previous period: due
    assert every.is_due(t(5.0)) == (False, 3.0)           # already ran in this one: at the next boundary
    clock[0] = t(23)
    assert every.is_due(t(6)).is_due                      # periods missed: one run, not one per period
    import pickle
    assert repr(pickle.loads(pickle.dumps(aligned_every(PERIOD_S)))) == "<aligned_every 5s>"   # beat shelves it


# ----------------------------------------------------------------------------- booted
def _servers() -> tuple[str, str]:
    redis_url, pg_url = os.environ.get("STREAMRANK_TEST_REDIS"), os.environ.get("STREAMRANK_TEST_POSTGRES")
    if not (redis_url and pg_url):
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI must set STREAMRANK_TEST_REDIS and STREAMRANK_TEST_POSTGRES (.ci/run)")
        pytest.skip("the production shape needs STREAMRANK_TEST_REDIS and STREAMRANK_TEST_POSTGRES")
    m = re.match(r"^(rediss?://[^/]+)", redis_url)
    assert m, redis_url
    return m.group(1), pg_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(port: int, path: str, body=None, timeout: float = 15.0):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body is not None else "GET",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _leftovers(pgids: set, home: Path) -> list:
    """Live processes in one of the Procfile's process groups or started with its STREAMRANK_HOME."""
    import psutil
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            mine = os.getpgid(p.pid) in pgids or p.environ().get("STREAMRANK_HOME") == str(home)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if mine:
            out.append((p.pid, " ".join(p.info["cmdline"] or [])[:120]))
    return out


def _seed(settings) -> None:
    """A small simulated world, a new stream live now with no history, statistics materialized."""
    import pandas as pd

    from feature_repo.statistics_job import run_statistics
    from store.ingest import upsert_catalog
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    ingest_source(settings, simulate(SimConfig(seed=9, n_users=60, n_streams=12, n_items=40, days=1,
                                               requests_per_day=80, end=end)), progress=False)
    upsert_catalog(settings.database_url,
                   streams=pd.DataFrame({"stream_id": [NEW_STREAM], "streamer_id": [1], "category": [0]}),
                   live_windows=pd.DataFrame({"stream_id": [NEW_STREAM], "start_ts": [end - timedelta(hours=1)],
                                              "end_ts": [end + timedelta(hours=3)]}))
    run_statistics(settings, progress=False)      # Feast applied + materialized once, before the processes


def _wait(what: str, ok, timeout: float, tails, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        got = ok()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} (within {timeout:.0f}s)\n{tails()}"
        time.sleep(every)


def test_the_procfile_boots_serves_schedules_and_stops_cleanly(tmp_path):
    redis_base, pg_url = _servers()
    import psutil
    import redis
    import sqlalchemy as sa

    from store.settings import Settings

    procfile = parse_procfile()
    home = (tmp_path / "var").resolve()
    dbname = f"streamrank_procfile_{os.getpid()}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            c.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL at {pg_url} unreachable or no CREATEDB ({exc.__class__.__name__})")
    db_url = sa.engine.make_url(pg_url).set(database=dbname).render_as_string(hide_password=False)
    clients = [redis.Redis.from_url(f"{redis_base}/{d}") for d in REDIS_DBS]
    for c in clients:
        c.flushdb()

    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAMRANK_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",    # the venv's `streamrank`
        "STREAMRANK_HOME": str(home),
        "STREAMRANK_DATABASE_URL": db_url,
        "STREAMRANK_BROKER_URL": f"{redis_base}/{REDIS_DBS[0]}",
        "STREAMRANK_RESULT_BACKEND": f"{redis_base}/{REDIS_DBS[0]}",
        "STREAMRANK_FEAST_ONLINE": f"{redis_base}/{REDIS_DBS[1]}",
        "STREAMRANK_PORT": str(port),
        "STREAMRANK_API_KEY": API_KEY,
        "STREAMRANK_STATS_BUCKET_S": str(PERIOD_S),
        # beat on a short schedule; the daily training entries off, so that none starts mid-test by the
        # clock (the solo training worker would finish it before it stops)
        "STREAMRANK_BEAT_SCHEDULE": (f"statistics-hourly={PERIOD_S},graph-embeddings-daily=off,gbdt-daily=off,"
                                     "ranker-daily=off,retrieval-daily=off"),
    })
    settings = Settings.from_env(env).ensure_dirs()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen] = {}
    files = []

    def start(name):
        f = open(logs / f"{name}.log", "wb")
        files.append(f)
        procs[name] = subprocess.Popen(["/bin/sh", "-c", procfile[name]], cwd=ROOT, env=env, stdout=f,
                                       stderr=subprocess.STDOUT, start_new_session=True)

    def log(name) -> str:
        p = logs / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def tails() -> str:
        return "\n".join(f"--- {n} (rc {p.poll()}):\n{log(n)[-2500:]}" for n, p in procs.items())

    def alive():
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        assert not dead, f"exited early: {dead}\n{tails()}"

    try:
        _seed(settings)
        # beat comes last: its first statistics run then finds the real-time worker warm (Feast
        # imported by the first push), so the 5 s runs do not pile up behind a cold start
        for name in ("api", "worker-realtime", "worker-training"):
            start(name)

        def ready():
            alive()
            try:
                return _http(port, "/readyz", timeout=5)[0] == 200
            except OSError:
                return False
        _wait("the API never became ready", ready, 120, tails, every=0.5)
        for name in ("worker-realtime", "worker-training"):
            _wait(f"{name} never became ready", lambda n=name: " ready." in log(n), 60, tails)
        banner = {n: log(n) for n in ("worker-realtime", "worker-training")}
        assert ".> realtime" in banner["worker-realtime"] and ".> default" in banner["worker-realtime"], tails()
        assert ".> training" in banner["worker-training"] and ".> realtime" not in banner["worker-training"]
        api_tree = [psutil.Process(procs["api"].pid)] + psutil.Process(procs["api"].pid).children(recursive=True)
        assert sum("gunicorn" in " ".join(p.cmdline()) for p in api_tree) == 3, tails()   # master + 2 workers

        # (a) POSTed events: pushed by the real-time worker, then counted in the recommend answer
        status, before = _http(port, "/v1/recommend", {"user_id": USER, "k": 200})
        assert status == 200, before
        assert before["model"]["name"] == "popularity", before["model"]        # no model trained here
        scores = {it["stream_id"]: it["score"] for it in before["items"]}
        assert scores.get(NEW_STREAM) == 0.0, scores
        n_clicks = int(max(scores.values())) + 3
        now = datetime.now(timezone.utc) - timedelta(seconds=1)
        events = [{"event_id": f"procfile-{i}", "user_id": USER + i, "ts": now.isoformat(), "type": "click",
                   "stream_id": NEW_STREAM} for i in range(n_clicks)]
        status, answer = _http(port, "/v1/events", {"events": events})
        assert status == 200 and answer["inserted"] == n_clicks and answer["push_enqueued"] is True, answer

        from feature_repo.online import OnlineFeatures
        from store import outbox
        online = OnlineFeatures(settings)

        def pushed():
            alive()
            recent = online.user_columns(USER, [NEW_STREAM], [None])["recent_streams"][0]
            return list(recent or []) == [NEW_STREAM] and not outbox.pending(db_url)
        _wait("the real-time worker never pushed the POSTed clicks", pushed, 60, tails)
        assert "streamrank.push_realtime" in log("worker-realtime") and "succeeded" in log("worker-realtime")

        start("beat")

        def runs():
            from store.jobs import last_runs
            return last_runs(db_url, "compute_statistics", limit=1000)

        def on_top():
            alive()
            st, ans = _http(port, "/v1/recommend", {"user_id": USER, "k": 200})
            assert st == 200, ans
            top = ans["items"][0]
            if top.get("policy") == "randomised":     # the 1 % of requests with the top-K permuted
                return any(it["stream_id"] == NEW_STREAM and it["score"] == float(n_clicks)
                           for it in ans["items"] if it.get("policy") == "randomised")
            return top["stream_id"] == NEW_STREAM and top["score"] == float(n_clicks)
        _wait("the scheduled statistics never counted the POSTed clicks in /v1/recommend", on_top, 60, tails, 0.5)
        time.sleep(2 * settings.snapshot_interval_s)           # both gunicorn workers' snapshots refreshed
        for _ in range(6):
            assert on_top(), "a gunicorn worker still answers with the old statistics"

        # (b) one statistics run per period of beat's short schedule, as many runs as beat sent
        _wait("fewer than 4 scheduled statistics runs finished",
              lambda: alive() or sum(r["status"] == "done" for r in runs()) >= 4, 60, tails)
        rows = _wait("job runs never matched beat's sends (a send ran twice, was lost, or skipped)",
                     lambda: (lambda r: r if len(r) == log("beat").count(SENT) else None)(runs()),
                     3 * PERIOD_S, lambda: f"beat sent {log('beat').count(SENT)}, runs {runs()}\n{tails()}", 0.1)
        keys = sorted(int(r["key"].rsplit("@", 1)[1]) for r in rows)
        assert len(set(keys)) == len(keys), f"a period ran twice: {keys}"
        assert all(k % PERIOD_S == 0 for k in keys), keys
        assert [b - a for a, b in zip(keys, keys[1:])] == [PERIOD_S] * (len(keys) - 1), f"a period was skipped: {keys}"
        for r in rows:
            key = int(r["key"].rsplit("@", 1)[1])
            started = datetime.fromisoformat(r["started_at"]).replace(tzinfo=timezone.utc).timestamp()
            assert key <= started < key + PERIOD_S, r           # run in its own period (beat aligned)
            if key != keys[-1]:
                assert r["status"] == "done", r

        # (c) SIGTERM to every process group, as a Procfile runner stops them
        pgids = {os.getpgid(p.pid) for p in procs.values()}
        running = _leftovers(pgids, home)            # the scan sees them all: its empty answer below means it
        assert len(running) >= 6, running            # gunicorn master + 2 workers, 2 Celery workers, beat
        t0 = time.monotonic()
        for p in procs.values():
            os.killpg(p.pid, signal.SIGTERM)
        rcs = {}
        for name, p in procs.items():
            try:
                rcs[name] = p.wait(timeout=max(STOP_S - (time.monotonic() - t0), 0.1))
            except subprocess.TimeoutExpired:
                rcs[name] = "still running"
        took = time.monotonic() - t0
        assert rcs == {n: 0 for n in procs}, f"exit statuses after SIGTERM: {rcs}\n{tails()}"
        left = _wait("processes left behind after SIGTERM", lambda: not _leftovers(pgids, home) or None,
                     max(STOP_S - took, 1.0), lambda: f"{_leftovers(pgids, home)}\n{tails()}", 0.2)
        assert left
        print(f"procfile: every process exited within {time.monotonic() - t0:.1f}s of SIGTERM; "
              f"{len(keys)} statistics periods")
    finally:                                         # every process, even when an assertion failed
        for p in procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        for pid, _ in _leftovers({p.pid for p in procs.values()}, home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for f in files:
            f.close()
        try:
            for c in clients:
                c.flushdb()
            from store.db import get_engine
            get_engine(db_url).dispose()
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            admin.dispose()
        except Exception as exc:                     # do not hide the test's own failure
            print(f"procfile test clean-up: {type(exc).__name__}: {exc}", file=sys.stderr)

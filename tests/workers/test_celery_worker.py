"""A real Celery worker PROCESS runs the tasks, on the embedded broker and on Redis."""
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
END = datetime(2026, 3, 2, 0, tzinfo=timezone.utc)


def _redis_url() -> str | None:
    url = os.environ.get("STREAMRANK_TEST_REDIS", "redis://127.0.0.1:6379")
    host, port = url.split("//", 1)[1].split(":")
    try:
        with socket.create_connection((host, int(port.split("/")[0])), timeout=0.5):
            return url
    except OSError:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"Redis is required in CI and is not reachable at {url} (.ci/run starts it)")
        return None


def _settings(kind: str, home: Path) -> Settings:
    if kind == "embedded":
        return Settings(home=home, worker_metrics_port=_free_port()).ensure_dirs()
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis server on 127.0.0.1:6379 (CI starts one; locally: redis-server --bind 127.0.0.1)")
    db = 5 + os.getpid() % 5
    import redis
    for d in (db, db + 5):                 # the broker / results and the Feast online store
        redis.Redis.from_url(f"{url}/{d}").flushdb()
    return Settings(home=home, broker_url=f"{url}/{db}", result_backend=f"{url}/{db}",
                    feast_online=f"{url}/{db + 5}", worker_metrics_port=_free_port()).ensure_dirs()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["embedded", "redis"])
def worker(request, tmp_path_factory):
    settings = _settings(request.param, tmp_path_factory.mktemp(request.param))
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate
    ingest_source(settings, simulate(SimConfig(seed=3, n_users=300, n_streams=30, n_items=200, days=4, end=END,
                                               requests_per_day=700)), progress=False)
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    log = open(settings.home / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
                             "-Q", "realtime,default,training", "--pool", "solo", "--loglevel", "INFO",
                             "--without-gossip", "--without-mingle", "-n", f"test-{request.param}@%h"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    from workers.celery_app import make_celery
    celery = make_celery(settings)
    yield settings, celery, proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    if request.param == "redis":
        import redis
        redis.Redis.from_url(settings.broker_url).flushdb()


def _run(celery, name, timeout=240, **kwargs):
    res = celery.send_task(name, kwargs=kwargs)
    return res.get(timeout=timeout)


def test_statistics_then_train_gbdt_once_per_data_version(worker):
    settings, celery, proc = worker
    from store.registry import list_models
    from workers.celery_app import TASK_NAMES
    first = _run(celery, TASK_NAMES["compute_statistics"], end=END.isoformat())
    assert first["skipped"] is False
    again = _run(celery, TASK_NAMES["compute_statistics"], end=END.isoformat())
    assert again["skipped"] is True and again["key"] == first["key"]

    a = _run(celery, TASK_NAMES["train_gbdt"], end=END.isoformat())
    b = _run(celery, TASK_NAMES["train_gbdt"], end=END.isoformat())
    assert a["version"] == b["version"]
    versions = list_models(settings.database_url, "gbdt")
    assert len(versions) == 1 and versions[0]["status"] == "active"
    assert versions[0]["metrics"]["auc"] > 0.5
    assert proc.poll() is None


def test_push_realtime_reaches_the_online_store(worker):
    settings, celery, proc = worker
    from feature_repo.store import get_store
    from store.ingest import ingest_events, load_catalog
    from workers.celery_app import TASK_NAMES
    now = datetime.now(timezone.utc).replace(microsecond=0)
    stream = int(load_catalog(settings.database_url)["streams"].stream_id.iloc[0])
    # 90 s back: in an earlier minute than `now`, so in the counters (whole minutes) at `now`
    events = [{"event_id": f"rt-{i}", "user_id": 10_000 + i, "ts": (now - timedelta(seconds=90 + i)).isoformat(),
               "type": "click", "stream_id": stream} for i in range(3)]
    assert ingest_events(settings.database_url, events).inserted == 3
    out = _run(celery, TASK_NAMES["push_realtime"], event_ids=[e["event_id"] for e in events], at=now.isoformat())
    assert out["rows"] >= 1
    store = get_store(settings)
    row = store.get_online_features(features=["stream_realtime:clicks_5m", "stream_realtime:viewers_5m"],
                                    entity_rows=[{"stream_id": stream}]).to_dict()
    assert row["clicks_5m"][0] == 3
    assert row["viewers_5m"][0] == 3
    recent = store.get_online_features(features=["user_recent:recent_streams"],
                                       entity_rows=[{"user_id": 10_000}]).to_dict()
    assert list(recent["recent_streams"][0]) == [stream]


def test_graph_embeddings_one_version_per_data_version(worker):
    settings, celery, proc = worker
    import numpy as np

    from graph.artifacts import load_active
    from store.registry import list_models
    from workers.celery_app import TASK_NAMES
    a = _run(celery, TASK_NAMES["train_graph_embeddings"], end=END.isoformat())
    b = _run(celery, TASK_NAMES["train_graph_embeddings"], end=END.isoformat())
    assert a["version"] == b["version"] and b.get("skipped") is True
    versions = list_models(settings.database_url, "metapath2vec")
    assert len(versions) == 1 and versions[0]["status"] == "active"
    emb = load_active(settings.database_url)
    for table in emb.tables.values():
        assert np.isfinite(table).all()


def test_a_batch_committed_but_never_enqueued_is_pushed_by_the_workers(worker):
    """The API dies between its commit and its enqueue (issue 17's lost push): the batch's outbox
    row is all that is left. The workers' sweep (here beat's recover-jobs task, with a zero age)
    re-sends the push through the broker; the user's recent streams reach the online store and
    the outbox empties."""
    settings, celery, proc = worker
    from feature_repo.online import OnlineFeatures
    from store import outbox
    from store.ingest import ingest_events, load_catalog
    from workers.celery_app import TASK_NAMES
    stream = int(load_catalog(settings.database_url)["streams"].stream_id.iloc[1])
    now = datetime.now(timezone.utc).replace(microsecond=0)
    user = 20_000 + int(time.time() * 1000) % 1_000_000          # a user nobody pushed before
    res = ingest_events(settings.database_url, [{"event_id": f"lost-{user}", "user_id": user, "type": "click",
                                                 "ts": (now - timedelta(seconds=5)).isoformat(), "stream_id": stream}],
                        return_ids=True, outbox=True)
    assert res.outbox_id is not None                   # ... and no push task was ever sent
    online = OnlineFeatures(settings)
    assert online.user_columns(user, [stream], [None])["recent_streams"][0] in (None, [])
    out = _run(celery, TASK_NAMES["recover_jobs"], push_age_s=0)
    assert res.outbox_id in out["pushes_resent"]
    deadline = time.monotonic() + 60
    while list(online.user_columns(user, [stream], [None])["recent_streams"][0] or []) != [stream]:
        assert time.monotonic() < deadline, "the re-sent push never landed"
        time.sleep(0.2)
    while any(r["id"] == res.outbox_id for r in outbox.pending(settings.database_url)):
        assert time.monotonic() < deadline, "the push landed but its outbox row stayed"
        time.sleep(0.2)


def test_the_worker_serves_task_metrics(worker):
    """STREAMRANK_WORKER_METRICS_PORT: the worker's /metrics has the task families, with the
    tasks this module ran (statistics, training, pushes) counted by state."""
    import urllib.request
    settings, celery, proc = worker
    from workers.celery_app import TASK_NAMES
    _run(celery, TASK_NAMES["recover_jobs"])
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in ("streamrank_task_duration_seconds", "streamrank_task_failures_total",
                   "streamrank_task_retries_total", "streamrank_push_lag_seconds"):
        assert f"# TYPE {family}" in text, family
    assert 'streamrank_task_duration_seconds_count{state="success",task="streamrank.recover_jobs"}' in text

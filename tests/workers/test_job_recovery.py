"""kill -9 of the training worker mid-job: the job runs again, and the registry holds exactly one
version for that data version (real Celery worker processes, the embedded broker, solo pool)."""
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
END = datetime(2026, 3, 2, 0, tzinfo=timezone.utc)


def _worker(settings, name: str) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    log = open(settings.home / f"worker-{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
                             "-Q", "training,default", "--pool", "solo", "--loglevel", "INFO",
                             "--without-gossip", "--without-mingle", "-n", f"{name}@%h"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _job_row(url):
    from store.jobs import last_runs
    runs = last_runs(url, "train_graph_embeddings")
    return runs[0] if runs else None


def test_a_job_killed_with_sigkill_runs_again_once(tmp_path):
    from store.registry import list_models
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate
    from workers.celery_app import TASK_NAMES, make_celery
    settings = Settings(home=tmp_path / "var", job_lease_s=3.0).ensure_dirs()
    ingest_source(settings, simulate(SimConfig(seed=5, n_users=600, n_streams=40, n_items=300, days=4, end=END,
                                               requests_per_day=1500)), progress=False)
    url = settings.database_url
    celery = make_celery(settings)
    first = _worker(settings, "first")
    second = None
    try:
        res = celery.send_task(TASK_NAMES["train_graph_embeddings"], kwargs={"end": END.isoformat()})
        deadline = time.monotonic() + 120
        while (row := _job_row(url)) is None or row["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            assert first.poll() is None
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)            # mid-job: claimed, nothing registered yet
        first.wait(timeout=10)
        assert _job_row(url)["status"] == "running" and list_models(url, "metapath2vec") == []
        assert row["task_id"] == res.id

        second = _worker(settings, "second")          # e.g. the supervisor's restart
        out = res.get(timeout=240)                    # the SAME task id answers: pipeline waits finish
        assert out["skipped"] is False
        versions = list_models(url, "metapath2vec")
        assert len(versions) == 1 and versions[0]["version"] == out["version"]
        row = _job_row(url)
        assert row["status"] == "done" and row["owner"] != "requeued:" + res.id

        # beat's run of the same job (no end) names the same input version: it does nothing
        again = celery.send_task(TASK_NAMES["train_graph_embeddings"]).get(timeout=120)
        assert again["skipped"] is True and again["version"] == out["version"]
        assert len(list_models(url, "metapath2vec")) == 1
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()

import pytest

from store.jobs import job_run, last_runs
from store.registry import active_model, already_trained, list_models, promote, register_model


def test_register_promote_retire(database_url):
    url = database_url
    assert active_model(url, "gbdt") is None
    register_model(url, "gbdt", "v1", "/a/v1", {"auc": 0.7}, data_version="d1", status="active")
    register_model(url, "gbdt", "v2", "/a/v2", {"auc": 0.71}, data_version="d2")
    assert active_model(url, "gbdt")["version"] == "v1"
    promote(url, "gbdt", "v2")
    assert active_model(url, "gbdt")["version"] == "v2"
    statuses = {m["version"]: m["status"] for m in list_models(url, "gbdt")}
    assert statuses == {"v1": "retired", "v2": "active"}
    assert register_model(url, "gbdt", "v2", "/other", {})["artifact_path"] == "/a/v2"
    with pytest.raises(LookupError):
        promote(url, "gbdt", "nope")


def test_job_run_once_per_key_and_retry_after_failure(database_url):
    url = database_url
    calls = []
    for _ in range(2):
        with job_run(url, "stats", "k1") as job:
            if not job.skip:
                calls.append(1)
                job.detail["rows"] = 5
    assert calls == [1]
    with job_run(url, "stats", "k1") as job:
        assert job.skip and job.detail == {"rows": 5}
    with pytest.raises(RuntimeError):
        with job_run(url, "stats", "k2") as job:
            raise RuntimeError("boom")
    assert last_runs(url, "stats")[0]["status"] == "failed"
    with job_run(url, "stats", "k2") as job:
        assert not job.skip
    assert last_runs(url, "stats")[0]["status"] == "done"


def test_already_trained_returns_the_registered_version_or_the_job_detail(database_url):
    url = database_url
    assert already_trained(url, "ranker", "d1#abc") is None
    assert already_trained(url, "ranker", "d1#abc", {"note": "claimed elsewhere"}) == \
        {"data_version": "d1#abc", "note": "claimed elsewhere", "skipped": True}
    register_model(url, "ranker", "v1", "/a/v1", {"auc": 0.7}, data_version="d1#abc")
    register_model(url, "gbdt", "g1", "/a/g1", {}, data_version="d1#abc")
    done = already_trained(url, "ranker", "d1#abc", {"note": "ignored"})
    assert done["version"] == "v1" and done["skipped"] is True and "note" not in done
    assert already_trained(url, "ranker", "d2#abc") is None


# ----------------------------------------------------------------------------- leases
def test_a_second_caller_waits_for_the_running_job_and_gets_its_result(database_url):
    """Beat and `streamrank pipeline` firing the same job: exactly one runs, the other waits."""
    import threading
    import time
    url = database_url
    ran, results = [], []

    def call():
        with job_run(url, "train", "k", lease_s=2.0, poll_s=0.05) as job:
            if not job.skip:
                ran.append(threading.get_ident())
                time.sleep(1.5)               # longer than a heartbeat period: the lease is renewed
                job.detail["version"] = "v1"
            results.append(dict(job.detail))
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert len(ran) == 1
    assert sorted(r["version"] for r in results) == ["v1"] * 3
    assert sum(bool(r.get("waited_for_another_run")) for r in results) == 2


def test_a_run_whose_heartbeat_stopped_is_taken_over(database_url):
    from datetime import timedelta

    from store.db import session_scope, utcnow
    from store.schema import JobRun
    url = database_url
    with session_scope(url) as s:             # a worker killed with -9 left this behind
        s.add(JobRun(task="train", key="k", status="running", owner="dead:1", started_at=utcnow(),
                     heartbeat_at=utcnow() - timedelta(seconds=30)))
    with job_run(url, "train", "k", lease_s=10) as job:
        assert not job.skip
        job.detail["ok"] = 1
    run = last_runs(url, "train")[0]
    assert run["status"] == "done" and run["owner"] != "dead:1"


def test_a_fresh_lease_is_not_taken_over(database_url):
    from store.db import session_scope, utcnow
    from store.schema import JobRun
    url = database_url
    with session_scope(url) as s:
        s.add(JobRun(task="train", key="k", status="running", owner="alive:1", started_at=utcnow(),
                     heartbeat_at=utcnow()))
    with job_run(url, "train", "k", lease_s=30, wait_s=0.3, poll_s=0.1) as job:
        assert job.skip and job.detail["claimed_elsewhere"] and job.detail["owner"] == "alive:1"
    assert last_runs(url, "train")[0]["owner"] == "alive:1"


def test_recovery_resends_the_dead_jobs_task_with_its_id_once(database_url):
    from datetime import timedelta

    from store.db import session_scope, utcnow
    from store.jobs import current_task, recover_stale_jobs
    from store.schema import JobRun
    url = database_url
    old = utcnow() - timedelta(seconds=30)
    with session_scope(url) as s:          # a training worker killed with -9 mid-job left this behind
        s.add(JobRun(task="train", key="k2", status="running", owner="dead:1", started_at=old, heartbeat_at=old,
                     task_name="streamrank.train_ranker", task_id="task-123", kwargs={"end": None}))
    token = current_task.set(("streamrank.train_ranker", "task-9", {}))
    try:
        with job_run(url, "train", "k1", lease_s=5):
            pass                           # finished runs and live ones are never re-sent
    finally:
        current_task.reset(token)
    sent = []
    resend = lambda name, task_id, kwargs: sent.append((name, task_id, kwargs))   # noqa: E731
    out = recover_stale_jobs(url, resend, lease_s=5)
    assert [o["key"] for o in out] == ["k2"] and out[0]["previous_owner"] == "dead:1"
    assert sent == [("streamrank.train_ranker", "task-123", {"end": None})]
    assert recover_stale_jobs(url, resend, lease_s=5) == [] and len(sent) == 1     # marked: not sent twice
    # another task with this key waits on the (fresh) mark; the re-sent task (same id) takes it at once
    with job_run(url, "train", "k2", lease_s=5, wait_s=0.2, poll_s=0.05) as job:
        assert job.skip and job.detail["claimed_elsewhere"]
    token = current_task.set(("streamrank.train_ranker", "task-123", {"end": None}))
    try:
        with job_run(url, "train", "k2", lease_s=5, wait_s=0.2) as job:
            assert not job.skip
            job.detail["version"] = "v2"
    finally:
        current_task.reset(token)
    run = next(r for r in last_runs(url, "train") if r["key"] == "k2")
    assert (run["key"], run["status"], run["task_id"], run["detail"]) == ("k2", "done", "task-123", {"version": "v2"})


def test_missing_lease_columns_are_added_to_an_old_database(tmp_path):
    import sqlite3

    from store.db import get_engine
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE job_runs (id INTEGER PRIMARY KEY, task VARCHAR(64), key VARCHAR(128), "
                "status VARCHAR(16), started_at DATETIME, finished_at DATETIME, detail JSON, "
                "CONSTRAINT uq_job_run UNIQUE (task, key))")
    con.commit()
    con.close()
    url = f"sqlite:///{path}"
    get_engine(url)
    cols = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(job_runs)")}
    assert {"owner", "heartbeat_at", "task_name", "task_id", "kwargs"} <= cols
    with job_run(url, "stats", "k") as job:
        job.detail["rows"] = 1
    assert last_runs(url, "stats")[0]["status"] == "done"

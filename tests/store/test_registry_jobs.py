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

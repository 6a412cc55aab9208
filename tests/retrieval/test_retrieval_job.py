"""The retrieval job (retrieval/job.py): trains on the log, registers, is idempotent, and its gate
keeps a better active version serving."""
from __future__ import annotations

import pytest


@pytest.fixture
def sim_log(settings):
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate
    data = simulate(SimConfig(seed=5, n_users=150, n_streams=60, n_items=60, n_categories=4, days=3,
                              requests_per_day=600))
    ingest_source(settings, data, progress=False)
    return settings


def test_the_job_trains_registers_and_is_idempotent(sim_log):
    from retrieval.artifact import RetrievalModel
    from retrieval.job import train_and_register_retrieval
    from store.registry import list_models
    row = train_and_register_retrieval(sim_log, epochs=2)
    assert row["status"] == "active" and not row["skipped"]
    m = row["metrics"]
    assert m["gate"] == {"passed": True, "why": "no active version"} and m["gate_k"] == 6
    assert 0 < m["recall@6"] <= 1 and m["n_valid"] > 20 and m["streams"] >= 60
    again = train_and_register_retrieval(sim_log, epochs=2)
    assert again["skipped"] and again["version"] == row["version"]
    assert len(list_models(sim_log.database_url, "two_tower")) == 1
    rm = RetrievalModel(row["artifact_path"])
    u = rm.user_vectors([3, 7], [1_700_000_000, 1_699_990_000], 1_700_000_100)
    assert u.shape == (1, rm.dim) and rm.stream_vectors([3, 424242]).shape == (2, rm.dim)


def test_a_worse_version_is_kept_out_by_the_gate(sim_log):
    from retrieval.job import train_and_register_retrieval
    from store.registry import active_model
    good = train_and_register_retrieval(sim_log, epochs=4)
    bad = train_and_register_retrieval(sim_log, epochs=0)          # an untrained tower: random vectors
    vs = bad["metrics"]["versus_active"]
    assert vs["version"] == good["version"]
    k = bad["metrics"]["gate_k"]
    assert vs[f"active_recall@{k}"] > vs[f"recall@{k}"], vs
    assert bad["status"] == "candidate" and bad["metrics"]["gate"]["passed"] is False
    assert active_model(sim_log.database_url, "two_tower")["version"] == good["version"]

"""Faults the API survives, with the real parts: the Feast online store (SQLite) locked by a
writer that does not let go. Every recommend still answers 200 at once — popularity from the
snapshot, ``"degraded"`` saying why — instead of waiting out the store's timeout; the model comes
back by itself when the store is readable again."""
from __future__ import annotations

import sqlite3
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

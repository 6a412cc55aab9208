"""POST /v1/recommend: popularity fallback, GBDT ranking, hot swap, impression log, snapshot."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np


def _recommend(client, **body):
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _expected_scores(world, model, user_id, stream_ids):
    """What the model gives for these candidates when features are read straight from Feast."""
    from feature_repo.online import OnlineFeatures
    from store.ingest import load_catalog
    cats = load_catalog(world.database_url)["streams"].set_index("stream_id")["category"]
    frame = OnlineFeatures(world).features(user_id, stream_ids, [int(cats[s]) for s in stream_ids])
    return model.predict(frame)


def test_popularity_fallback_when_no_model(client, world, live_ids):
    from feature_repo.online import OnlineFeatures
    out = _recommend(client, user_id=5, k=10)
    assert out["model"]["name"] == "popularity" and out["model"]["fallback"] is True
    assert out["model"]["version"] is None and "no active" in out["model"]["reason"]
    items = out["items"]
    assert [it["position"] for it in items] == list(range(1, len(items) + 1))
    assert len(items) == min(10, len(live_ids))
    assert {it["stream_id"] for it in items} <= set(live_ids)          # default candidates: live now
    # ordered by the 7-day clicks of the stream (the popularity column), best first
    clicks = OnlineFeatures(world).stream_rows(live_ids).set_index("stream_id")["s_clicks_7d"].fillna(0)
    assert [it["score"] for it in items] == [float(clicks[it["stream_id"]]) for it in items]
    assert [it["score"] for it in items] == sorted(clicks.to_list(), reverse=True)[:len(items)]


def test_impressions_logged_with_positions(client, world, db):
    before = db.snapshot()
    out = _recommend(client, user_id=7, k=4, page="home")
    rid = out["request_id"]
    assert out["impressions"] == {"journaled": True, "count": 4}
    assert client.application.extensions["streamrank"].journal.flush() in (0, 4)
    rows = db.rows("SELECT event_id, stream_id, position, page, model_version, user_id FROM impressions "
                   "WHERE request_id = :rid ORDER BY position", rid=rid)
    assert [(r[1], r[2]) for r in rows] == [(it["stream_id"], it["position"]) for it in out["items"]]
    assert all(r[0] == f"imp-{rid}-{r[2]}" and r[3] == "home" and r[4] == "popularity" and r[5] == 7 for r in rows)
    ev = db.rows("SELECT type, stream_id, position FROM events WHERE request_id = :rid ORDER BY position", rid=rid)
    assert ev == [("impression", it["stream_id"], it["position"]) for it in out["items"]]
    assert db.count("events") == before["events"] + len(out["items"])


def test_gbdt_model_ranks_and_is_named(client, world, register_gbdt, db):
    version, model = register_gbdt(direction=-1.0)      # anti-popularity: differs from the fallback
    cands = [r[0] for r in db.rows("SELECT stream_id FROM streams ORDER BY stream_id")][:12]
    out = _recommend(client, user_id=3, candidates=cands, k=12)
    assert out["model"] == {"name": "gbdt", "version": version}
    got = [it["stream_id"] for it in out["items"]]
    assert sorted(got) == sorted(cands)
    expected = _expected_scores(world, model, 3, cands)
    exp_by_stream = dict(zip(cands, expected))
    assert np.allclose([it["score"] for it in out["items"]], [exp_by_stream[s] for s in got])
    scores = [it["score"] for it in out["items"]]
    assert scores == sorted(scores, reverse=True)
    client.application.extensions["streamrank"].journal.flush()
    imp = db.rows("SELECT DISTINCT model_version FROM impressions WHERE request_id = :r", r=out["request_id"])
    assert imp == [(f"gbdt:{version}",)]


def test_model_hot_swap_and_retire(client, world, register_gbdt):
    from store.registry import reject
    v1, _ = register_gbdt(direction=1.0)
    assert _recommend(client, user_id=1, k=3)["model"]["version"] == v1
    v2, _ = register_gbdt(direction=-1.0)              # promoted: v1 retired
    assert _recommend(client, user_id=1, k=3)["model"]["version"] == v2   # MODEL_CHECK_S = 0 in tests
    reject(world.database_url, "gbdt", v2)              # no active model left -> popularity again
    assert _recommend(client, user_id=1, k=3)["model"]["name"] == "popularity"


def test_hot_swap_waits_for_the_check_interval(make_app, register_gbdt):
    app = make_app(MODEL_CHECK_S=30.0)
    client = app.test_client()
    v1, _ = register_gbdt()
    assert _recommend(client, user_id=1, k=2)["model"]["version"] == v1
    register_gbdt()
    assert _recommend(client, user_id=1, k=2)["model"]["version"] == v1     # not re-checked yet
    holder = app.extensions["streamrank"].models
    holder.check_now()
    assert _recommend(client, user_id=1, k=2)["model"]["version"] != v1


def test_broken_artifact_keeps_previous_model(client, world, register_gbdt, tmp_path):
    v1, _ = register_gbdt()
    assert _recommend(client, user_id=2, k=2)["model"]["version"] == v1
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "model.txt").write_text("not a model")
    register_gbdt(path=bad)                             # active, but cannot load
    out = _recommend(client, user_id=2, k=2)
    assert out["model"]["version"] == v1 and "failed to load" in out["model"]["degraded"]   # and it says so


def test_broken_artifact_without_previous_falls_back(client, register_gbdt, tmp_path):
    register_gbdt(path=tmp_path / "missing")
    out = _recommend(client, user_id=2, k=2)
    assert out["model"]["name"] == "popularity" and "failed to load" in out["model"]["reason"]


def test_user_feature_failure_falls_back_to_popularity(app, register_gbdt, monkeypatch):
    register_gbdt()
    online = app.extensions["streamrank"].online

    def boom(*a, **k):
        raise ConnectionError("online store down")
    monkeypatch.setattr(online, "user_columns", boom)
    out = _recommend(app.test_client(), user_id=2, k=3)
    assert out["model"]["fallback"] is True and "user features unavailable" in out["model"]["reason"]
    assert len(out["items"]) == 3


def test_offline_candidate_fetched_on_demand(app, live_ids, offline_stream):
    OFFLINE_STREAM = offline_stream
    client = app.test_client()
    out = _recommend(client, user_id=4, candidates=[OFFLINE_STREAM] + live_ids[:3], k=10)
    assert {it["stream_id"] for it in out["items"]} == {OFFLINE_STREAM, *live_ids[:3]}
    offline = [it for it in out["items"] if it["stream_id"] == OFFLINE_STREAM][0]
    # no statistics: least popular (a live stream without clicks in the 3 simulated days — the
    # simulator's broadcasts follow the time of day — may tie with it at 0)
    assert offline["score"] == 0.0
    assert all(it["position"] < offline["position"] for it in out["items"] if it["score"] > 0)
    snap = app.extensions["streamrank"].snapshot
    assert OFFLINE_STREAM in snap.state().categories                  # added to the snapshot
    snap.refresh()
    assert OFFLINE_STREAM in snap.state().frame.index                 # and kept in the refresh set


def test_unknown_candidates_are_named(client, db):
    before = db.snapshot()
    r = client.post("/v1/recommend", json={"user_id": 1, "candidates": [1, 424242, 2, 515151]})
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] == "unknown_streams" and "424242" in body["detail"] and "515151" in body["detail"]
    assert body["unknown_stream_ids"] == [424242, 515151]
    assert db.snapshot() == before


def test_no_live_streams_answers_empty(app, world):
    from api.snapshot import StreamSnapshot
    rt = app.extensions["streamrank"]
    far = datetime.now(timezone.utc) + timedelta(days=3650)
    rt._snapshot = StreamSnapshot(world, rt.online, clock=lambda: far)
    out = _recommend(app.test_client(), user_id=1)
    assert out["items"] == [] and "no live streams" in out["reason"]
    assert out["model"]["name"] == "popularity"


def test_unknown_user_is_a_cold_start(client, db):
    out = _recommend(client, user_id=10_000_000, k=3)
    assert len(out["items"]) == 3
    client.application.extensions["streamrank"].journal.flush()
    assert db.count("users", "WHERE user_id = 10000000") == 1          # created by the impression log


def test_k_bounds_the_list_and_defaults_to_20(client, live_ids):
    assert len(_recommend(client, user_id=1, k=1)["items"]) == 1
    assert len(_recommend(client, user_id=1)["items"]) == min(20, len(live_ids))


def test_snapshot_refreshes_in_background(make_app, world):
    app = make_app(background=True, SNAPSHOT_INTERVAL_S=0.2)
    _recommend(app.test_client(), user_id=1, k=2)
    snap = app.extensions["streamrank"].snapshot
    assert snap.running
    n = snap.refreshes
    deadline = time.monotonic() + 10
    while snap.refreshes < n + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert snap.refreshes >= n + 2
    assert snap.state().age_s() < 1.0
    from api import close_app
    close_app(app)
    assert not snap.running


def test_default_candidates_are_capped_by_popularity(make_app, live_ids):
    app = make_app(MAX_CANDIDATES=3)
    out = _recommend(app.test_client(), user_id=1, k=10)
    assert len(out["items"]) == 3
    full = _recommend(make_app().test_client(), user_id=1, k=3)      # all live streams scored
    assert [it["stream_id"] for it in out["items"]] == [it["stream_id"] for it in full["items"]]


def test_hot_swap_under_load_drops_no_request(make_app, world, register_gbdt, live_ids):
    """Requests keep flowing (4 threads) while the active version flips: every answer is a 200 from
    one of the registered versions."""
    import threading
    from store.registry import promote
    app = make_app(MODEL_CHECK_S=0.05)
    v1, _ = register_gbdt(direction=1.0)
    v2, _ = register_gbdt(direction=-1.0)
    seen, errors = [], []
    stop = threading.Event()

    def hammer():
        client = app.test_client()
        while not stop.is_set():
            r = client.post("/v1/recommend", json={"user_id": 9, "candidates": live_ids[:5], "k": 5})
            if r.status_code != 200:
                errors.append(r.get_json())
            else:
                seen.append(r.get_json()["model"].get("version"))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for version in (v1, v2, v1, v2):
        promote(world.database_url, "gbdt", version)
        time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors
    assert set(seen) == {v1, v2}


def test_a_broken_artifact_is_retried_with_back_off_and_served_once_fixed(make_app, world, register_gbdt,
                                                                           tmp_path, monkeypatch):
    """Not remembered for the worker's life: the file fixed in place is picked up after the back-off."""
    from api import scoring
    monkeypatch.setattr(scoring, "RETRY_FIRST_S", 2.0)
    app = make_app(MODEL_CHECK_S=0.0)
    client = app.test_client()
    _, model = register_gbdt(promote_it=False)           # a good model to write later
    bad = tmp_path / "fixed-later"
    version, _ = register_gbdt(path=bad)                 # active, nothing there yet
    out = _recommend(client, user_id=2, k=2)
    assert out["model"]["name"] == "popularity" and "failed to load" in out["model"]["reason"]
    holder = app.extensions["streamrank"].models
    first_retry = holder._failed[(version, str(bad))][1]
    _recommend(client, user_id=2, k=2)                   # within the back-off: no new attempt
    assert holder._failed[(version, str(bad))][1] == first_retry
    model.save(bad)                                      # the operator fixes the file in place
    time.sleep(2.1)
    assert _recommend(client, user_id=2, k=2)["model"] == {"name": "gbdt", "version": version}
    assert holder.info()["failed_versions"] == []

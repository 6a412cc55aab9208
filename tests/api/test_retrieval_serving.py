"""Retrieval in /v1/recommend (api/retrieval.py): the channels of each item, near-real-time user
vectors from the pushed lists, the live index following the live set, and today's behaviour
without an active two-tower."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import pytest


def test_without_an_active_two_tower_every_live_stream_is_a_candidate(make_app, live_ids):
    from store.registry import active_model
    app = make_app()
    assert active_model(app.config["SETTINGS"].database_url, "two_tower") is None     # (runs before the fixture)
    body = app.test_client().post("/v1/recommend", json={"user_id": 3, "k": 200}).get_json()
    assert "retrieval" not in body and len(body["items"]) == len(live_ids)
    assert all("source" not in it for it in body["items"])


@pytest.fixture(scope="module")
def two_tower(world):
    """A two-tower trained on the API world's log and promoted; rejected after the module (other
    tests see no active retrieval model)."""
    from retrieval.job import train_and_register_retrieval
    from store.registry import list_models, reject
    row = train_and_register_retrieval(world, epochs=2)
    assert row["status"] == "active"
    yield row
    for m in list_models(world.database_url, "two_tower"):
        reject(world.database_url, "two_tower", m["version"])


def test_retrieved_candidates_say_their_channel(make_app, two_tower, live_ids):
    client = make_app().test_client()
    r = client.post("/v1/recommend", json={"user_id": 3, "k": 200})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["retrieval"]["version"] == two_tower["version"]
    assert 0 < body["retrieval"]["candidates"] <= 200
    srcs = [it["source"] for it in body["items"]]
    assert set(srcs) <= {"repeat", "ann", "popular"} and "ann" in srcs
    assert {it["stream_id"] for it in body["items"]} <= set(live_ids)           # live streams only
    assert len({it["stream_id"] for it in body["items"]}) == len(body["items"])   # de-duplicated
    # explicit candidates: no retrieval, no source
    r = client.post("/v1/recommend", json={"user_id": 3, "candidates": live_ids[:3]})
    assert "retrieval" not in r.get_json() and all("source" not in it for it in r.get_json()["items"])


def test_a_new_watch_changes_the_users_retrieval_at_once(make_app, two_tower, live_ids, world):
    """A cold user watches a stream: once the push has landed (the real-time worker's job, done
    here in-process) the next answer retrieves with the new history — the watched live stream
    comes back through the repeat channel and the ANN list is the user tower's new output."""
    from feature_repo.realtime import push_entities
    app = make_app()
    client = app.test_client()
    user = 900_000 + int(uuid.uuid4().int % 10_000)
    before = client.post("/v1/recommend", json={"user_id": user, "k": 200}).get_json()
    assert all(it["source"] != "repeat" for it in before["items"])
    target = live_ids[-1]
    ev = {"event_id": f"nrt-{uuid.uuid4().hex}", "user_id": user, "ts": datetime.now(timezone.utc).isoformat(),
          "type": "watch", "stream_id": target, "value": 60.0}
    t0 = time.monotonic()
    assert client.post("/v1/events", json={"events": [ev]}).status_code == 200
    push_entities(world, [target], [user])
    after = client.post("/v1/recommend", json={"user_id": user, "k": 200}).get_json()
    took = time.monotonic() - t0
    by_src = {it["stream_id"]: it["source"] for it in after["items"]}
    assert by_src.get(target) == "repeat", after["items"][:5]
    ann_before = [it["stream_id"] for it in before["items"] if it["source"] == "ann"]
    ann_after = [it["stream_id"] for it in after["items"] if it["source"] == "ann"]
    assert ann_before != ann_after                   # the user vector moved with one watch
    print(f"event -> changed retrieval in {took:.2f} s (push in-process)")


def test_the_index_follows_the_live_set_within_seconds(world, two_tower):
    """A stream that goes live is retrievable, one that ends is gone, within 5 s (SYNC_S = 1 s)."""
    from api.retrieval import Retrieval
    from retrieval.artifact import RetrievalModel
    model = RetrievalModel(two_tower["artifact_path"])
    ids = model.vocab.ids.tolist()
    live = {"ids": ids[:5]}

    class Snap:
        def live_ids(self):
            return list(live["ids"])

    ret = Retrieval(world, lambda: Snap(), check_s=0.0, background=True)
    try:
        loaded, index = ret.current()
        assert loaded.version == two_tower["version"] and set(index.ids().tolist()) == set(ids[:5])
        live["ids"] = ids[1:7]                      # ids[0] ends, ids[5], ids[6] go live
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and set(ret.current()[1].ids().tolist()) != set(ids[1:7]):
            time.sleep(0.05)
        got = set(ret.current()[1].ids().tolist())
        assert got == set(ids[1:7]), got
        found, _ = ret.current()[1].search(model.stream_vectors([ids[6]])[0], 6)
        assert ids[6] in found.tolist() and ids[0] not in found.tolist()
    finally:
        ret.close()

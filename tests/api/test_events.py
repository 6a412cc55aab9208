"""POST /v1/events: answered after commit, idempotent, all-or-nothing, real-time push enqueued."""
from __future__ import annotations

import time
import uuid

import pytest


class FakeCelery:
    def __init__(self, fail=False):
        self.sent = []
        self.fail = fail

    def send_task(self, name, args=None, **kwargs):
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((name, args))


@pytest.fixture
def fake_celery(app):
    fake = FakeCelery()
    app.extensions["streamrank"]._celery = fake
    return fake


def _events(n=3, prefix=None, stream_id=1):
    prefix = prefix or uuid.uuid4().hex[:10]
    kinds = ["click", "watch", "impression"]
    out = []
    for i in range(n):
        ev = {"event_id": f"{prefix}-{i}", "user_id": 11, "ts": "2026-01-02T03:04:05Z",
              "type": kinds[i % 3], "stream_id": stream_id}
        if ev["type"] == "watch":
            ev["value"] = 30.5
        if ev["type"] == "impression":
            ev.update(request_id=f"r-{prefix}", position=i + 1, page="live_tab")
        out.append(ev)
    return out


def test_events_committed_then_answered(client, db, fake_celery):
    evs = _events(6)
    r = client.post("/v1/events", json={"events": evs})
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"received": 6, "inserted": 6, "duplicates": 0, "push_enqueued": True}
    ids = [e["event_id"] for e in evs]
    rows = db.rows("SELECT event_id, type, stream_id, value FROM events WHERE event_id LIKE :p ORDER BY event_id",
                   p=ids[0].rsplit("-", 1)[0] + "-%")
    assert [r[0] for r in rows] == sorted(ids)
    assert fake_celery.sent == [("streamrank.push_realtime", [ids])]
    assert db.count("impressions", "WHERE request_id = :r", r=evs[2]["request_id"]) == 2


def test_bare_list_body_is_accepted(client, fake_celery):
    r = client.post("/v1/events", json=_events(2))
    assert r.status_code == 200 and r.get_json()["inserted"] == 2


def test_same_batch_twice_gives_same_rows(client, db, fake_celery):
    evs = _events(5)
    first = client.post("/v1/events", json={"events": evs})
    after_first = db.snapshot()
    table = db.rows("SELECT * FROM events ORDER BY id")
    second = client.post("/v1/events", json={"events": evs})
    assert first.status_code == second.status_code == 200
    assert second.get_json() == {"received": 5, "inserted": 0, "duplicates": 5, "push_enqueued": False}
    assert db.snapshot() == after_first and db.rows("SELECT * FROM events ORDER BY id") == table
    assert len(fake_celery.sent) == 1                 # nothing new: nothing pushed again


def test_duplicates_within_a_batch_are_no_ops(client, fake_celery):
    evs = _events(2)
    r = client.post("/v1/events", json=evs + [evs[0]])
    assert r.get_json() == {"received": 3, "inserted": 2, "duplicates": 1, "push_enqueued": True}


def test_one_bad_row_rejects_the_batch(client, db, fake_celery):
    evs = _events(4)
    evs[2]["type"] = "teleport"
    before = db.snapshot()
    r = client.post("/v1/events", json={"events": evs})
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] == "invalid_events" and "row 2" in body["detail"]
    assert body["errors"] == [{"row": 2, "field": "type", "reason": body["errors"][0]["reason"]}]
    assert db.snapshot() == before
    assert db.count("events", "WHERE event_id = :e", e=evs[0]["event_id"]) == 0
    assert fake_celery.sent == []


def test_unknown_stream_rejects_the_batch(client, db, fake_celery):
    evs = _events(3, stream_id=1)
    evs[1]["stream_id"] = 777777
    before = db.snapshot()
    r = client.post("/v1/events", json=evs)
    assert r.status_code == 400 and r.get_json()["errors"][0]["row"] == 1
    assert "777777" in r.get_json()["detail"]
    assert db.snapshot() == before


def test_thousand_events_fit_one_request(client, fake_celery):
    r = client.post("/v1/events", json=_events(1000))
    assert r.status_code == 200 and r.get_json()["inserted"] == 1000


def test_broker_down_never_fails_the_request(make_app, world, db):
    app = make_app(world.with_(broker_url="redis://127.0.0.1:1/0"))
    evs = _events(2)
    t0 = time.perf_counter()
    r = app.test_client().post("/v1/events", json=evs)
    took = time.perf_counter() - t0
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["inserted"] == 2 and body["push_enqueued"] is False and "broker" in body["push_detail"]
    assert db.count("events", "WHERE event_id IN (:a, :b)", a=evs[0]["event_id"], b=evs[1]["event_id"]) == 2
    assert took < 10


def test_push_is_enqueued_on_the_embedded_broker(client, db):
    """The real Celery app (sqla+sqlite broker): the message lands in the broker's queue table."""
    r = client.post("/v1/events", json=_events(2))
    assert r.status_code == 200 and r.get_json()["push_enqueued"] is True

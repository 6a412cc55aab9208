"""Bad input on every route: always a 4xx JSON {error, detail}, never a 5xx, nothing written."""
from __future__ import annotations

import json

import pytest

EV = {"event_id": "bad-input-1", "user_id": 1, "ts": "2026-01-01T00:00:00Z", "type": "click", "stream_id": 1}


def ev(**changes):
    out = dict(EV, **changes)
    return {k: v for k, v in out.items() if v is not ...}


def js(body):
    return {"data": json.dumps(body), "content_type": "application/json"}


# (id, method, path, request kwargs (or a callable returning them), status, error code)
CASES = [
    # --- POST /v1/recommend
    ("rec-text-plain", "post", "/v1/recommend", {"data": '{"user_id": 1}', "content_type": "text/plain"}, 415,
     "unsupported_media_type"),
    ("rec-no-content-type", "post", "/v1/recommend", {"data": '{"user_id": 1}'}, 415, "unsupported_media_type"),
    ("rec-malformed-json", "post", "/v1/recommend", {"data": '{"user_id": 1,', "content_type": "application/json"},
     400, "invalid_json"),
    ("rec-empty-body", "post", "/v1/recommend", {"data": "", "content_type": "application/json"}, 400, "invalid_json"),
    ("rec-nan", "post", "/v1/recommend", {"data": '{"user_id": NaN}', "content_type": "application/json"}, 400,
     "invalid_json"),
    ("rec-not-utf8", "post", "/v1/recommend", {"data": b'{"user_id": "\xff"}', "content_type": "application/json"},
     400, "invalid_json"),
    ("rec-deep-nesting", "post", "/v1/recommend", {"data": "[" * 100_000 + "]" * 100_000,
                                                   "content_type": "application/json"}, 400, None),
    ("rec-body-is-list", "post", "/v1/recommend", js([1, 2]), 400, "bad_request"),
    ("rec-missing-user", "post", "/v1/recommend", js({"k": 3}), 400, "missing_field"),
    ("rec-user-string", "post", "/v1/recommend", js({"user_id": "7"}), 400, "invalid_field"),
    ("rec-user-bool", "post", "/v1/recommend", js({"user_id": True}), 400, "invalid_field"),
    ("rec-user-float", "post", "/v1/recommend", js({"user_id": 1.0}), 400, "invalid_field"),
    ("rec-user-negative", "post", "/v1/recommend", js({"user_id": -3}), 400, "invalid_field"),
    ("rec-user-too-big", "post", "/v1/recommend", js({"user_id": 2 ** 63}), 400, "invalid_field"),
    ("rec-user-null", "post", "/v1/recommend", js({"user_id": None}), 400, "invalid_field"),
    ("rec-k-zero", "post", "/v1/recommend", js({"user_id": 1, "k": 0}), 400, "invalid_field"),
    ("rec-k-too-big", "post", "/v1/recommend", js({"user_id": 1, "k": 201}), 400, "invalid_field"),
    ("rec-k-bool", "post", "/v1/recommend", js({"user_id": 1, "k": True}), 400, "invalid_field"),
    ("rec-k-string", "post", "/v1/recommend", js({"user_id": 1, "k": "5"}), 400, "invalid_field"),
    ("rec-cands-not-list", "post", "/v1/recommend", js({"user_id": 1, "candidates": 5}), 400, "invalid_field"),
    ("rec-cands-empty", "post", "/v1/recommend", js({"user_id": 1, "candidates": []}), 400, "invalid_field"),
    ("rec-cands-too-many", "post", "/v1/recommend", js({"user_id": 1, "candidates": list(range(1001))}), 400,
     "invalid_field"),
    ("rec-cands-duplicate", "post", "/v1/recommend", js({"user_id": 1, "candidates": [1, 2, 1]}), 400,
     "invalid_field"),
    ("rec-cands-string-id", "post", "/v1/recommend", js({"user_id": 1, "candidates": [1, "2"]}), 400,
     "invalid_field"),
    ("rec-cands-bool-id", "post", "/v1/recommend", js({"user_id": 1, "candidates": [1, False]}), 400,
     "invalid_field"),
    ("rec-cands-negative", "post", "/v1/recommend", js({"user_id": 1, "candidates": [1, -2]}), 400,
     "invalid_field"),
    ("rec-cands-unknown", "post", "/v1/recommend", js({"user_id": 1, "candidates": [1, 123456789]}), 400,
     "unknown_streams"),
    ("rec-page-empty", "post", "/v1/recommend", js({"user_id": 1, "page": ""}), 400, "invalid_field"),
    ("rec-page-too-long", "post", "/v1/recommend", js({"user_id": 1, "page": "p" * 33}), 400, "invalid_field"),
    ("rec-page-number", "post", "/v1/recommend", js({"user_id": 1, "page": 3}), 400, "invalid_field"),
    ("rec-unknown-field", "post", "/v1/recommend", js({"user_id": 1, "candidate": [1]}), 400, "unknown_field"),
    ("rec-too-large", "post", "/v1/recommend",
     lambda: {"data": '{"user_id": 1, "page": "' + "x" * (3 * 1024 * 1024) + '"}', "content_type": "application/json"},
     413, "request_entity_too_large"),
    ("rec-get", "get", "/v1/recommend", {}, 405, "method_not_allowed"),
    # --- POST /v1/events
    ("ev-text-plain", "post", "/v1/events", {"data": "[]", "content_type": "text/csv"}, 415, "unsupported_media_type"),
    ("ev-malformed", "post", "/v1/events", {"data": "[{", "content_type": "application/json"}, 400, "invalid_json"),
    ("ev-not-array", "post", "/v1/events", js({"events": {"a": 1}}), 400, "invalid_field"),
    ("ev-number-body", "post", "/v1/events", js(42), 400, "invalid_field"),
    ("ev-missing-events-key", "post", "/v1/events", js({}), 400, "missing_field"),
    ("ev-extra-top-field", "post", "/v1/events", js({"events": [EV], "debug": True}), 400, "unknown_field"),
    ("ev-empty", "post", "/v1/events", js({"events": []}), 400, "empty_batch"),
    ("ev-too-many", "post", "/v1/events", js({"events": [ev(event_id=f"x{i}") for i in range(1001)]}), 413,
     "too_many_events"),
    ("ev-not-object", "post", "/v1/events", js([EV, "click"]), 400, "invalid_events"),
    ("ev-missing-type", "post", "/v1/events", js([ev(type=...)]), 400, "invalid_events"),
    ("ev-bad-type", "post", "/v1/events", js([ev(type="teleport")]), 400, "invalid_events"),
    ("ev-user-bool", "post", "/v1/events", js([ev(user_id=True)]), 400, "invalid_events"),
    ("ev-user-negative", "post", "/v1/events", js([ev(user_id=-1)]), 400, "invalid_events"),
    ("ev-user-object", "post", "/v1/events", js([ev(user_id={"id": 1})]), 400, "invalid_events"),
    ("ev-bad-ts", "post", "/v1/events", js([ev(ts="yesterday-ish")]), 400, "invalid_events"),
    ("ev-click-without-stream", "post", "/v1/events", js([ev(stream_id=...)]), 400, "invalid_events"),
    ("ev-unknown-stream", "post", "/v1/events", js([ev(stream_id=987654321)]), 400, "invalid_events"),
    ("ev-negative-watch", "post", "/v1/events", js([ev(type="watch", value=-5)]), 400, "invalid_events"),
    ("ev-position-zero", "post", "/v1/events", js([ev(type="impression", position=0)]), 400, "invalid_events"),
    ("ev-position-int64-max", "post", "/v1/events", js([ev(type="impression", position=9223372036854775807)]), 400,
     "invalid_events"),       # the poison event: accepted once, it broke every job that read the log
    ("ev-unknown-event-field", "post", "/v1/events", js([ev(colour="red")]), 400, "invalid_events"),
    ("ev-id-over-int64", "post", "/v1/events", js([ev(stream_id=2 ** 63)]), 400, "invalid_events"),
    ("ev-user-over-uint64", "post", "/v1/events", js([EV, ev(event_id="b2", user_id=2 ** 64)]), 400,
     "invalid_events"),
    ("ev-event-id-too-long", "post", "/v1/events", js([ev(event_id="e" * 200)]), 400, "invalid_events"),
    ("ev-get", "get", "/v1/events", {}, 405, "method_not_allowed"),
    # --- GET /v1/models, health, unknown routes
    ("models-post", "post", "/v1/models", js({}), 405, "method_not_allowed"),
    ("models-empty-name", "get", "/v1/models?name=", {}, 400, "invalid_field"),
    ("models-long-name", "get", "/v1/models?name=" + "n" * 65, {}, 400, "invalid_field"),
    ("models-unknown-arg", "get", "/v1/models?nmae=gbdt", {}, 400, "unknown_field"),
    ("healthz-post", "post", "/healthz", {}, 405, "method_not_allowed"),
    ("readyz-delete", "delete", "/readyz", {}, 405, "method_not_allowed"),
    # --- inputs that once got a 500 or were silently coerced (issue 17's fuzzing)
    ("ev-lone-surrogate-id", "post", "/v1/events", js([ev(event_id="e\ud800")]), 400, "invalid_events"),
    ("ev-lone-surrogate-page", "post", "/v1/events", js([ev(page="p\udfff")]), 400, "invalid_events"),
    ("ev-nul-in-request-id", "post", "/v1/events", js([ev(request_id="r\x00")]), 400, "invalid_events"),
    ("ev-ts-2262", "post", "/v1/events", js([ev(ts="2262-04-12T00:00:00Z")]), 400, "invalid_events"),
    ("ev-ts-2999", "post", "/v1/events", js([ev(ts="2999-12-31T23:59:59Z")]), 400, "invalid_events"),
    ("ev-ts-now", "post", "/v1/events", js([ev(ts="now")]), 400, "invalid_events"),
    ("ev-ts-today", "post", "/v1/events", js([ev(ts="today")]), 400, "invalid_events"),
    ("ev-ts-basic-format", "post", "/v1/events", js([ev(ts="20261201")]), 400, "invalid_events"),
    ("ev-float-id-2-63-mixed", "post", "/v1/events", js([EV, ev(event_id="m2", stream_id=9.3e18)]), 400,
     "invalid_events"),
    ("ev-float-event-id", "post", "/v1/events", js([ev(event_id=1.0)]), 400, "invalid_events"),
    ("rec-page-lone-surrogate", "post", "/v1/recommend", js({"user_id": 1, "page": "p\ud800"}), 400, "invalid_field"),
    ("unknown-route", "get", "/v2/recommend", {}, 404, "not_found"),
    ("rec-duplicate-key", "post", "/v1/recommend",
     {"data": '{"user_id": 1, "user_id": 2}', "content_type": "application/json"}, 400, "invalid_json"),
    ("ev-duplicate-key-in-event", "post", "/v1/events",
     {"data": '[{"event_id": "d1", "user_id": 1, "type": "click", "stream_id": 1, "stream_id": 2}]',
      "content_type": "application/json"}, 400, "invalid_json"),
    ("double-slash-route", "get", "//v1/models", {}, 404, "not_found"),
]


@pytest.mark.parametrize("method,path,kwargs,status,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_json_error(client, db, method, path, kwargs, status, code):
    before = db.snapshot()
    kwargs = kwargs() if callable(kwargs) else kwargs
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:300])
    assert r.is_json, r.get_data(as_text=True)[:300]
    body = r.get_json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert isinstance(body.get("detail"), str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    assert db.snapshot() == before


def test_there_are_at_least_15_distinct_bad_input_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 15
    assert len({c[2] for c in CASES}) >= 5                    # spread over every route


def test_405_keeps_the_allow_header(client):
    r = client.get("/v1/recommend")
    assert r.status_code == 405 and "POST" in r.headers["Allow"] and r.is_json


FUZZ_VALUES = [None, True, False, 0, -1, 1, 2 ** 63, 2 ** 64, -2 ** 63, 1.5, 3.0, 1e308, -0.0, "", "x", "1",
               "2026-01-01", "click", "impression", [], [1], {}, {"a": 1}, "\u0000", "é" * 40,
               "2026-13-45T99:00:00Z", 1e18]
EVENT_FIELDS = ["event_id", "user_id", "ts", "type", "stream_id", "item_id", "request_id", "position", "page", "value"]


def test_fuzzed_bodies_never_get_a_5xx(client):
    """Random values in every field of both write routes: 2xx or 4xx JSON, never a 5xx."""
    import random
    rnd = random.Random(1234)
    for i in range(250):
        ev = {f: rnd.choice(FUZZ_VALUES) for f in EVENT_FIELDS if rnd.random() < 0.7}
        if rnd.random() < 0.5:
            ev.update(event_id=f"fuzz-{i}", ts="2026-01-01T00:00:00Z", user_id=rnd.choice([1, 2]))
        if rnd.random() < 0.5:
            ev.update(type=rnd.choice(["click", "watch", "impression", "item_click", "purchase"]),
                      stream_id=rnd.choice([1, 2, 3]))
        body = rnd.choice([[ev], {"events": [ev]}, [ev, ev]])
        r = client.post("/v1/events", data=json.dumps(body), content_type="application/json")
        assert r.status_code < 500 and r.is_json, (body, r.get_json())
        if r.status_code >= 400:
            assert r.get_json()["error"] and r.get_json()["detail"]
    for _ in range(150):
        body = {f: rnd.choice(FUZZ_VALUES + [[1, 2, 3], [1, 2 ** 63], list(range(1, 5))])
                for f in ("user_id", "candidates", "k", "page") if rnd.random() < 0.7}
        r = client.post("/v1/recommend", data=json.dumps(body), content_type="application/json")
        assert r.status_code < 500 and r.is_json, (body, r.get_json())

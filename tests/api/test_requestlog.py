"""X-Request-Id in and out, and one JSON log line per request."""
from __future__ import annotations

import json
import logging


def _lines(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "streamrank.requests"]


def test_request_ids_are_echoed_and_used_by_recommend(client, caplog):
    caplog.set_level(logging.INFO, logger="streamrank.requests")
    r = client.post("/v1/recommend", json={"user_id": 1, "k": 2}, headers={"X-Request-Id": "client-req.42"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "client-req.42"
    assert r.get_json()["request_id"] == "client-req.42"      # impression ids imp-client-req.42-<pos>
    r2 = client.get("/healthz")
    rid = r2.headers["X-Request-Id"]
    assert len(rid) == 32 and rid != "client-req.42"          # a new one when none is sent
    lines = _lines(caplog)
    rec = [ln for ln in lines if ln["request_id"] == "client-req.42"][0]
    assert rec["route"] == "/v1/recommend" and rec["method"] == "POST" and rec["status"] == 200
    assert rec["ms"] > 0 and "model" in rec and "degraded" in rec
    assert rec["model"].split(":")[0] in ("gbdt", "ranker", "popularity")
    assert any(ln["request_id"] == rid and ln["route"] == "/healthz" for ln in lines)


def test_bad_request_ids_are_a_400_and_errors_are_logged(client, caplog):
    caplog.set_level(logging.INFO, logger="streamrank.requests")
    r = client.get("/healthz", headers={"X-Request-Id": "no spaces allowed"})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_header"
    assert len(r.headers["X-Request-Id"]) == 32
    r = client.get("/v2/nothing")
    assert r.status_code == 404
    lines = _lines(caplog)
    assert {ln["status"] for ln in lines} >= {400, 404}
    assert any(ln["route"] == "/v2/nothing" for ln in lines)

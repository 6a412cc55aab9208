"""GET /metrics: the API's Prometheus families after real requests."""
from __future__ import annotations


def _value(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix) and not line.startswith("#"))


def test_metrics_report_requests_answers_models_and_journal(client):
    before = client.get("/metrics").get_data(as_text=True)
    n0 = _value(before, 'streamrank_http_request_duration_seconds_count{method="POST",route="/v1/recommend",status="200"}')
    for user in (1, 2, 3):
        assert client.post("/v1/recommend", json={"user_id": user, "k": 2}).status_code == 200
    assert client.post("/v1/recommend", json={"user_id": -1}).status_code == 400
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    for family in ("streamrank_http_request_duration_seconds", "streamrank_recommend_answers_total",
                   "streamrank_active_model_info", "streamrank_snapshot_age_seconds",
                   "streamrank_journal_backlog_impressions", "streamrank_impressions_dropped_total"):
        assert f"# TYPE {family}" in text, family
    n1 = _value(text, 'streamrank_http_request_duration_seconds_count{method="POST",route="/v1/recommend",status="200"}')
    assert n1 - n0 == 3
    assert _value(text, 'streamrank_http_request_duration_seconds_count{method="POST",route="/v1/recommend",status="400"}') >= 1
    assert _value(text, "streamrank_recommend_answers_total{") >= 3
    assert "streamrank_active_model_info{" in text

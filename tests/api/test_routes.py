"""GET /healthz, /readyz, /v1/models; API-key enforcement; the app factory's import weight."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_readyz_ready(client):
    r = client.get("/readyz")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] and body["checks"]["feature_store"]["ok"]


def test_readyz_503_when_database_unreachable(make_app, world, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    app = make_app(world.with_(database_url=f"sqlite:///{blocker}/sub/streamrank.db"))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["error"] == "not_ready" and "database" in body["detail"]
    assert body["checks"]["database"]["ok"] is False and body["checks"]["feature_store"]["ok"] is True


def test_readyz_503_when_feature_store_unreachable(make_app, world):
    # the same (applied) repo, read through a Redis online store nobody listens to
    app = make_app(world.with_(feast_online="redis://127.0.0.1:1/0"), READY_TIMEOUT_S=2.0)
    t0 = time.perf_counter()
    r = app.test_client().get("/readyz")
    assert time.perf_counter() - t0 < 10                     # a probe answers even when a backend hangs
    assert r.status_code == 503
    body = r.get_json()
    assert body["checks"]["feature_store"]["ok"] is False and body["checks"]["database"]["ok"] is True


def test_models_lists_the_registry(client, register_gbdt):
    v1, _ = register_gbdt()
    v2, _ = register_gbdt(promote_it=False)
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.get_json()
    by_version = {m["version"]: m for m in body["models"]}
    assert by_version[v1]["status"] == "active" and by_version[v2]["status"] == "candidate"
    assert body["active"] == {"gbdt": v1}
    assert [m["version"] for m in body["models"]][:2] == [v2, v1]          # newest first
    assert set(by_version[v1]) >= {"name", "version", "artifact_path", "metrics", "status", "created_at"}
    assert client.get("/v1/models?name=other").get_json() == {"models": [], "active": {}}


def test_models_metrics_stay_strict_json(client, world, register_gbdt):
    from store.registry import register_model
    register_model(world.database_url, "gbdt", "nan-metrics", "/nowhere", metrics={"auc": float("nan")})
    r = client.get("/v1/models?name=gbdt")
    assert "NaN" not in r.get_data(as_text=True)
    assert [m for m in r.get_json()["models"] if m["version"] == "nan-metrics"][0]["metrics"]["auc"] is None


@pytest.fixture
def keyed(make_app, world):
    return make_app(world.with_(api_key="s3cret")).test_client()


@pytest.mark.parametrize("path,body", [("/v1/recommend", {"user_id": 1, "k": 2}),
                                       ("/v1/events", [{"event_id": "key-test", "user_id": 1,
                                                        "ts": "2026-01-01T00:00:00Z", "type": "click",
                                                        "stream_id": 1}])])
def test_write_routes_need_the_api_key(keyed, db, path, body):
    before = db.snapshot()
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        r = keyed.post(path, json=body, headers=headers)
        assert r.status_code == 401 and r.get_json()["error"] == "unauthorized" and r.get_json()["detail"]
    assert db.snapshot() == before
    # the key is checked before the body: a bad body without the key is still a 401
    assert keyed.post(path, data="{", content_type="application/json").status_code == 401
    r = keyed.post(path, json=body, headers={"X-API-Key": "s3cret"})
    assert r.status_code == 200, r.get_json()


def test_what_is_exposed_without_the_key(keyed, world, make_app, tmp_path):
    """Probes work without the key; the registry (artifact paths, metrics) and the readiness
    details (backend error texts, paths, versions) need it."""
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/v1/models").status_code == 401
    assert keyed.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
    r = keyed.get("/readyz")
    assert r.status_code == 200 and set(r.get_json()) == {"status", "checks"}
    assert r.get_json()["checks"] == {"database": {"ok": True}, "feature_store": {"ok": True}}
    assert "journal" in keyed.get("/readyz", headers={"X-API-Key": "s3cret"}).get_json()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    broken = make_app(world.with_(api_key="s3cret", database_url=f"sqlite:///{blocker}/sub/x.db"))
    r = broken.test_client().get("/readyz")
    body = r.get_json()
    assert r.status_code == 503 and body["checks"]["database"] == {"ok": False}
    assert str(tmp_path) not in str(body) and "journal" not in body


def test_the_api_key_is_not_in_reprs_nor_in_the_printed_curl():
    from store.settings import Settings
    s = Settings(api_key="s3cret")
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)
    import inspect

    from streamrank import cli
    assert "settings.api_key}" not in inspect.getsource(cli.cmd_run)


def test_no_key_configured_means_open_write_routes(client):
    assert client.post("/v1/recommend", json={"user_id": 1, "k": 1}).status_code == 200


def test_create_app_is_light_and_reads_the_environment(tmp_path):
    """create_app() (gunicorn's 'api:create_app()') reads STREAMRANK_* and imports no heavy library."""
    code = ("import sys, api; app = api.create_app(); s = app.config['SETTINGS'];"
            "heavy = [m for m in ('feast', 'torch', 'lightgbm', 'torch_geometric', 'graph', 'celery') if m in sys.modules];"
            "print(s.api_key, s.port, s.home.name, heavy)")
    env = dict(os.environ, STREAMRANK_HOME=str(tmp_path / "h"), STREAMRANK_API_KEY="k1", STREAMRANK_PORT="8123")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "k1 8123 h []"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_serves_create_app_from_the_environment(world, tmp_path):
    """`gunicorn 'api:create_app()'` (what `streamrank serve` runs) answers with env settings only."""
    import json
    import urllib.error
    import urllib.request
    port = _free_port()
    env = dict(os.environ, **world.with_(port=port, api_key="gk", read_timeout_s=1.5).to_env())
    from streamrank.cli import serve_argv
    argv = serve_argv(world.with_(port=port), workers=1, threads=2, timeout_s=120, access_log=False)
    log = open(tmp_path / "gunicorn.log", "w+")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.loads(r.read()) == {"status": "ok"}
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, open(tmp_path / "gunicorn.log").read()
                time.sleep(0.2)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/recommend", method="POST",
                                     data=json.dumps({"user_id": 1, "k": 3}).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as no_key:
            urllib.request.urlopen(req, timeout=60)
        assert no_key.value.code == 401 and json.loads(no_key.value.read())["error"] == "unauthorized"
        req.add_header("X-API-Key", "gk")
        with urllib.request.urlopen(req, timeout=90) as r:
            body = json.loads(r.read())
        assert len(body["items"]) == 3 and body["model"]["name"] in ("gbdt", "popularity")
        # the request log: one JSON line per request on the workers' stderr
        log.flush()
        lines = [json.loads(x) for x in open(tmp_path / "gunicorn.log") if x.startswith('{"ts"')]
        assert [ln["status"] for ln in lines if ln["route"] == "/v1/recommend"] == [401, 200]
        # /metrics: prometheus_client's multiprocess aggregate (api/gunicorn_conf.py), no key needed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'streamrank_http_request_duration_seconds_count{method="POST",route="/v1/recommend",status="200"} 1.0' in text
        assert "streamrank_recommend_answers_total{" in text and "streamrank_active_model_info{" in text
        assert "python_gc_objects_collected_total" not in text        # the multiprocess registry, not one process's

        # gunicorn's own rejections (before the app) are JSON too: 414, 431, 400
        for raw, status in ((b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
                            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
                            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
                             + b"\r\n", 431),
                            (b"BLAH\r\n\r\n", 400)):
            head, body = _raw_http(port, raw).split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 %d " % status), head[:80]
            assert b"Content-Type: application/json" in head, head
            err = json.loads(body)
            assert set(err) == {"error", "detail"} and err["error"], err

        # a body over the cap (1 MiB) is a JSON 413, whether it declares its length or is chunked
        big = b'{"events": [' + b" " * (2 * 1024 * 1024) + b"]}"
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 65536]), big[i:i + 65536])
                           for i in range(0, len(big), 65536)) + b"0\r\n\r\n"
        for headers, payload in ((b"Content-Length: %d\r\n" % len(big), big),
                                 (b"Transfer-Encoding: chunked\r\n", chunked)):
            raw = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: gk\r\nContent-Type: application/json\r\n"
                   + headers + b"\r\n" + payload)
            head, body = _raw_http(port, raw).split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 413 "), (headers, head[:200], body[:200])
            assert json.loads(body)["error"] == "request_entity_too_large"

        # stalled sockets: more half-sent requests than the worker has threads (2) do not stop
        # the API — each is dropped after STREAMRANK_READ_TIMEOUT_S (1.5 s here)
        import socket
        stalled = []
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: appl")   # ... and nothing more
            stalled.append(s)
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=20) as r:
            assert r.status == 200
        assert time.monotonic() - t0 < 15
        for s in stalled:
            s.settimeout(10)
            try:
                assert s.recv(100) == b""             # closed by the server, not held
            except ConnectionResetError:
                pass
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _raw_http(port: int, raw: bytes) -> bytes:
    """Send raw bytes, return everything the server answers before it closes the connection."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass                       # the server answered (and closed) before reading it all
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                head, body = b"".join(chunks).split(b"\r\n\r\n", 1)
                length = [int(v) for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n")[1:])
                          if k.lower() == b"content-length"]
                if length and len(body) >= length[0]:
                    break
        return b"".join(chunks)

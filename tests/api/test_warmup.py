"""Cold start: a fresh worker is warmed up (stores, snapshot, models, one scoring) before it takes
traffic, without writing anything (api/warmup.py, gunicorn's post_worker_init)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_warm_up_loads_and_scores_without_writing(make_app, register_gbdt, db):
    from api.runtime import get_runtime
    from api.warmup import warm_up
    version, _ = register_gbdt()
    app = make_app()
    before = db.snapshot()
    out = warm_up(app)
    assert out["errors"] == {} and out["model"] == f"gbdt:{version}", out
    assert {"feature_store", "snapshot", "gbdt", "score", "journal", "total"} <= set(out["ms"])
    with app.app_context():
        rt = get_runtime()
        assert rt._snapshot is not None and rt._models is not None and rt._journal is not None
    time.sleep(0.5)                                   # (the journal's flusher had time to write, if anything)
    assert db.snapshot() == before                    # no impression, no event, no user


def test_a_failing_step_does_not_stop_the_worker(make_app, monkeypatch):
    from api.runtime import Runtime
    from api.warmup import warm_up

    def unreadable(self):
        raise OSError("online store unreadable")
    monkeypatch.setattr(Runtime, "online", property(unreadable))
    out = warm_up(make_app())                         # must not raise
    assert "online store unreadable" in out["errors"]["feature_store"] and "total" in out["ms"]
    assert "journal" in out["ms"]                     # the later steps still ran


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_workers_are_warm_before_their_first_request(world, register_gbdt, tmp_path):
    """The first /readyz a worker answers already finds the snapshot and the active model loaded,
    and the warm-up line is logged before any request line."""
    from streamrank.cli import serve_argv
    version, _ = register_gbdt()
    port = _free_port()
    env = dict(os.environ, **world.with_(port=port, api_key="wk").to_env())
    argv = serve_argv(world.with_(port=port), workers=1, threads=2, timeout_s=120)
    log_path = tmp_path / "gunicorn.log"
    log = open(log_path, "w+")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/readyz", headers={"X-API-Key": "wk"})
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    status, body = r.status, json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
        assert status == 200, body
        assert body["model"]["version"] == version and body["snapshot"]["streams"] > 0, body
        text = log_path.read_text()
        warm = [ln for ln in text.splitlines() if "warm-up {" in ln]
        assert len(warm) == 1, text[-3000:]
        info = json.loads(warm[0].split("warm-up ", 1)[1])
        assert info["errors"] == {} and info["model"] == f"gbdt:{version}", info
        first_request = min(i for i, ln in enumerate(text.splitlines()) if ln.startswith('{"ts"'))
        assert text.splitlines().index(warm[0]) < first_request
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()

"""`streamrank run` stops everything it started on SIGTERM (not only on Ctrl-C): no Celery
worker or gunicorn process is left behind (issue 17: orphaned workers kept running and an
orphaned gunicorn kept the port)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _processes_of(home: Path) -> list[int]:
    """pids of live processes started with STREAMRANK_HOME=home (the run's children carry it)."""
    marker = f"STREAMRANK_HOME={home}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in env.split(b"\0") and state != "Z":
            pids.append(int(d.name))
    return pids


def test_sigterm_during_the_pipeline_stops_the_workers(tmp_path):
    home = (tmp_path / "var").resolve()
    env = dict(os.environ, STREAMRANK_HOME=str(home), STREAMRANK_PORT="0")
    log = open(tmp_path / "run.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streamrank.cli", "run", "--days", "1", "--users", "60"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "started Celery worker training" not in (tmp_path / "run.log").read_text():
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.5)
        time.sleep(2)                                          # the pipeline's first job is on its way
        workers = _processes_of(home)
        assert len(workers) >= 2, workers                      # both Celery workers (and their pool)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        assert rc == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while _processes_of(home) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_of(home) == [], (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _processes_of(home):
            os.kill(pid, signal.SIGKILL)
        log.close()

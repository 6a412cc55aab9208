"""ope.position_curve and ``streamrank position-curve`` on simulated logs with a planted curve."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ope.position_curve import impressions_with_clicks, position_curve
from store.sources.simulator import SimConfig, examination, simulate

ROOT = Path(__file__).resolve().parents[2]
TRUTH = examination(np.arange(1, 11)) / examination(1)


@pytest.fixture(scope="module")
def log():
    return simulate(SimConfig(seed=3, explore_rate=0.3, n_users=800, n_streams=80, days=10)).events


def test_the_randomised_requests_recover_the_planted_curve(log):
    imps = impressions_with_clicks(log)
    method, rows = position_curve(imps, n_boot=100)
    assert method == "randomised"
    est = np.array([r["examination"] for r in rows])
    assert est[0] == 1.0 and len(rows) == 10
    assert np.abs(est - TRUTH).max() < 0.1, est
    covered = sum(r["ci_low"] <= t <= r["ci_high"] for r, t in zip(rows[1:], TRUTH[1:]))
    assert covered >= 7, rows                               # 95 % CIs: most slots cover the truth
    # the ranked traffic alone is confounded: its click-rate ratio falls faster than the truth
    ranked = imps[imps["policy"] == "ranked"]
    naive = ranked.groupby("position")["clicked"].mean().to_numpy()
    assert naive[4] / naive[0] < TRUTH[4] - 0.05


def test_cli_prints_json_rows_and_plots(log, tmp_path):
    path = tmp_path / "events.parquet"
    log.to_parquet(path)
    out = subprocess.run([sys.executable, "-m", "streamrank.cli", "position-curve", "--events", str(path),
                          "--bootstrap", "50"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["position"] for r in rows] == list(range(1, 11))
    assert {r["method"] for r in rows} == {"randomised"}
    assert all(r["ci_low"] <= r["examination"] <= r["ci_high"] for r in rows)
    assert (tmp_path / "events-position-curve.png").stat().st_size > 5000
    # without the policy flags: the EM estimate, and it says so
    log.drop(columns=["policy"]).to_parquet(tmp_path / "plain.parquet")
    out = subprocess.run([sys.executable, "-m", "streamrank.cli", "position-curve", "--events",
                          str(tmp_path / "plain.parquet"), "--bootstrap", "0"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    em = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["method"] for r in em} == {"em"} and all(r["ci_low"] is None for r in em)
    bad = subprocess.run([sys.executable, "-m", "streamrank.cli", "position-curve", "--events",
                          str(tmp_path / "nope.csv")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "no such file" in bad.stderr

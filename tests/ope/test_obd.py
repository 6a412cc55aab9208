"""ope.data.read_obd and ``streamrank evaluate-ope`` on the Open Bandit Dataset's files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ope.data import read_obd

ROOT = Path(__file__).resolve().parents[2]
OBD = ROOT.parent / "shared" / "data" / "obd"


def _write_obd(folder: Path, rows: list[dict], n_items: int = 3) -> Path:
    folder.mkdir(parents=True)
    df = pd.DataFrame(rows)
    for a in range(n_items):
        df[f"user-item_affinity_{a}"] = 0.1 * a
    df.to_csv(folder / f"{folder.name}.csv")
    pd.DataFrame({"item_id": range(n_items), "item_feature_0": [0.5, -0.1, 0.2][:n_items],
                  "item_feature_1": ["x", "y", "x"][:n_items]}).to_csv(folder / "item_context.csv")
    return folder


def test_rows_are_sorted_by_time_and_positions_dense_from_zero(tmp_path):
    rows = [dict(timestamp=f"2019-11-2{d} 00:00:00", item_id=i, position=p, click=c, propensity_score=0.5,
                 user_feature_0=u) for d, i, p, c, u in [(4, 2, 3, 0, "a"), (1, 0, 1, 1, "b"), (2, 1, 2, 0, "a")]]
    log = read_obd(_write_obd(tmp_path / "random" / "all", rows))
    assert log.action.tolist() == [0, 1, 2]                      # by timestamp
    assert log.position.tolist() == [0, 1, 2] and log.len_list == 3
    assert log.reward.tolist() == [1.0, 0.0, 0.0] and log.n_actions == 3
    assert log.context.shape == (3, 1)                           # one-hot, first level dropped
    assert log.affinity.shape == (3, 3) and log.action_context.shape == (3, 2)
    assert log.name == "random/all"


def test_a_bad_propensity_or_folder_is_refused(tmp_path):
    rows = [dict(timestamp="2019-11-24", item_id=0, position=1, click=0, propensity_score=0.0, user_feature_0="a")]
    with pytest.raises(ValueError, match="propensities outside"):
        read_obd(_write_obd(tmp_path / "bts" / "all", rows))
    with pytest.raises(FileNotFoundError):
        read_obd(tmp_path / "nope")


@pytest.mark.skipif(not (OBD / "random" / "all").exists(), reason="../shared/data/obd not here")
def test_evaluate_ope_on_the_open_bandit_dataset(tmp_path):
    png = tmp_path / "ope.png"
    out = subprocess.run([sys.executable, "-m", "streamrank.cli", "evaluate-ope", "--source", "obd",
                          "--logged", str(OBD / "random" / "all"), "--target", str(OBD / "bts" / "all"),
                          "--n-sim", "3000", "--bootstrap", "300", "--plot", str(png)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["estimator"] for r in rows] == ["ips", "snips", "dm", "dr"]
    on = np.mean(pd.read_csv(OBD / "bts" / "all" / "all.csv")["click"])
    for r in rows:
        assert r["on_policy"] == pytest.approx(on)
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
        assert r["relative_error"] == pytest.approx(abs(r["estimate"] - on) / on)
        assert 0 < r["estimate"] < 0.02 and r["n"] == 10_000
    assert png.stat().st_size > 5000
    bad = subprocess.run([sys.executable, "-m", "streamrank.cli", "evaluate-ope", "--logged", str(tmp_path),
                          "--target", str(tmp_path / "missing")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "no such folder" in bad.stderr

"""ranking.twitch_eval: the heuristics agree with the independent reference script; lightgbm runs
through the real feature path on a small split."""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHARED, shared_data
from ranking.twitch_eval import Queries, evaluate_twitch, heuristic_scores

REFERENCE = SHARED / "tools" / "twitch_reference.py"


def _split(tmp_path, lo, mid, hi):
    df = pd.read_csv(shared_data("twitch", "watches.csv"))
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    df[(df.slot >= lo) & (df.slot < mid)].to_csv(train, index=False)
    df[(df.slot >= mid) & (df.slot < hi)].to_csv(test, index=False)
    return train, test


def _reference(train, test):
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not available")
    out = subprocess.run([sys.executable, str(REFERENCE), str(train), str(test)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return {r["model"]: r for r in map(json.loads, out.strip().splitlines())}


@pytest.mark.parametrize("bounds", [(0, 1200, 1500), (2000, 2600, 2700)])
def test_heuristics_agree_with_the_reference(tmp_path, bounds):
    train, test = _split(tmp_path, *bounds)
    ref = _reference(train, test)
    names = ("popularity", "repeat", "recent_viewers", "repeat_then_recent")
    rows = {r["model"]: r for r in evaluate_twitch(train, test, models=names)}
    for name in names:
        assert rows[name]["n"] == ref[name]["n"] > 100
        for k in ("auc", "hr@1", "hr@10", "mrr"):
            assert abs(rows[name][k] - ref[name][k]) <= 1e-3, (name, k, rows[name][k], ref[name][k])
        assert 0 <= rows[name]["gauc"] <= 1
    assert rows["repeat"]["auc"] > rows["popularity"]["auc"]


def _toy():
    train = pd.DataFrame({"user_id": [1, 1, 2, 3], "streamer_id": [10, 10, 11, 12], "slot": [0, 1, 1, 2],
                          "community": [0, 0, 1, 1]})
    test = pd.DataFrame({"user_id": [1, 2, 1, 3, 4], "streamer_id": [10, 12, 11, 10, 13], "slot": [5, 5, 6, 6, 7],
                         "community": [0, 1, 1, 0, 1]})
    return train, test


def test_candidates_and_point_in_time_counts():
    train, test = _toy()
    q = Queries(test)
    # slot 7 has a single live streamer: its query is skipped
    assert q.queries["slot"].tolist() == [5, 5, 6, 6]
    c = q.cand
    assert sorted(set(map(tuple, c[["slot", "stream_id"]].to_numpy()))) == [(5, 10), (5, 12), (6, 10), (6, 11)]
    assert c["label"].sum() == 4 and len(c) == 8
    h = heuristic_scores(train, test, c)
    rep = dict(zip(zip(c.user_id, c.slot, c.stream_id), np.round(h["repeat"] - 1e-6 * h["popularity"])))
    assert rep[(1, 5, 10)] == 2            # two train watches
    assert rep[(1, 6, 10)] == 3            # + the test watch at slot 5 (before 6)
    assert rep[(1, 6, 11)] == 0            # the slot-6 watch itself is not history
    pop = dict(zip(c.stream_id, h["popularity"]))
    assert pop[10] == 2 and pop[12] == 1 and pop[11] == 1


def test_lightgbm_on_a_small_split(tmp_path):
    pytest.importorskip("lightgbm")
    train, test = _split(tmp_path, 0, 600, 700)
    rows = evaluate_twitch(train, test, models=("popularity", "repeat", "lightgbm"), work_dir=tmp_path / "w",
                           max_train_rows=60_000)
    by = {r["model"]: r for r in rows}
    assert set(by) == {"popularity", "repeat", "lightgbm"}
    lg = by["lightgbm"]
    assert set(lg) == {"model", "auc", "gauc", "hr@1", "hr@10", "mrr", "n"}
    assert lg["n"] == by["repeat"]["n"] > 100
    assert not math.isnan(lg["auc"]) and lg["auc"] > by["popularity"]["auc"]
    assert (tmp_path / "w" / "feast" / "data" / "stream_stats.parquet").exists()

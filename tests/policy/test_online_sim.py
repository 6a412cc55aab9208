"""The cold-start race on the online simulation (policy.online_sim): Thompson sampling brings a
new high-quality stream to the top slots fast and has less regret than no exploration and than
ε-greedy's uniform choice at the same exploration share."""
from __future__ import annotations

import pytest

from policy.online_sim import run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thompson_wins_the_race_and_the_regret(seed):
    ts, none, uni = (run(p, requests=5000, seed=seed) for p in ("thompson", "none", "uniform"))
    assert ts["star_top3_after"] is not None and ts["star_top3_after"] <= 600, ts
    assert none["star_top3_after"] is None or ts["star_top3_after"] < none["star_top3_after"]
    assert ts["cumulative_regret"] < none["cumulative_regret"], (ts, none)
    assert ts["cumulative_regret"] < uni["cumulative_regret"], (ts, uni)


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy must be"):
        run("greedy", requests=10)

"""The cold-start race on the online simulation (policy.online_sim): with exploration every new
stream is shown within a bounded number of requests; without it, the ranker leaves them at the
mean score and they wait, mostly for ever. (Which exploration has less regret is bench/exploration.py's question:
on this world Thompson sampling and the uniform choice are within each other's seed noise.)"""
from __future__ import annotations

import pytest

from policy.online_sim import run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exploration_shows_every_new_stream_soon(seed):
    none = run("none", requests=3000, seed=seed)
    never = float("inf")
    none_first = [x if x >= 0 else never for x in none["new_first_shown"]]          # -1: never shown
    for policy in ("thompson", "uniform"):
        r = run(policy, requests=3000, seed=seed)
        assert min(r["new_first_shown"]) >= 0 and max(r["new_first_shown"]) <= 200, r["new_first_shown"]
        assert max(r["new_first_shown"]) < min(none_first), (policy, r["new_first_shown"], none_first)
        assert r["star_top3_after"] is not None                  # the star wins its place in the ranked order
        assert r["min_regret"] >= 0.0                  # the best page bounds every page from above


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy must be"):
        run("greedy", requests=10)

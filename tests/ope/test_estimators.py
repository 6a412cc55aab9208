"""ope.estimators against hand-computed values and a synthetic bandit with a known target value."""
from __future__ import annotations

import numpy as np
import pytest

from ope.estimators import bootstrap_ci, estimate, round_rewards


def _tiny():
    # 4 rows, 2 actions, 1 position; logging uniform (0.5); target: action 1 w.p. 0.8
    action = np.array([0, 1, 1, 0])
    reward = np.array([1.0, 1.0, 0.0, 0.0])
    position = np.zeros(4, dtype=int)
    pscore = np.full(4, 0.5)
    dist = np.broadcast_to(np.array([[0.2], [0.8]]), (4, 2, 1))
    q = np.broadcast_to(np.array([[0.3], [0.6]]), (4, 2, 1))
    return dict(reward=reward, action=action, position=position, pscore=pscore, action_dist=dist, q_hat=q)


def test_each_estimator_on_a_hand_example():
    d = _tiny()
    w = np.array([0.4, 1.6, 1.6, 0.4])                                  # π_e / π_b
    assert np.allclose(round_rewards("ips", **d), w * d["reward"])
    assert round_rewards("ips", **d).mean() == pytest.approx((0.4 + 1.6) / 4)
    assert round_rewards("snips", **d).mean() == pytest.approx((0.4 + 1.6) / w.sum())
    dm = 0.2 * 0.3 + 0.8 * 0.6
    assert np.allclose(round_rewards("dm", **d), dm)
    q_f = np.array([0.3, 0.6, 0.6, 0.3])
    assert np.allclose(round_rewards("dr", **d), dm + w * (d["reward"] - q_f))
    # switch-DR: weights above tau drop their correction; tau = inf is DR
    assert np.allclose(round_rewards("switch-dr", tau=1.0, **d), dm + (w <= 1.0) * w * (d["reward"] - q_f))
    assert np.allclose(round_rewards("switch-dr", **d), round_rewards("dr", **d))
    with pytest.raises(ValueError, match="reward model"):
        round_rewards("dm", **{**d, "q_hat": None})
    with pytest.raises(ValueError, match="unknown estimator"):
        round_rewards("magic", **d)


def test_the_bootstrap_resamples_rows_as_randomstate_choice_does():
    x = np.random.default_rng(0).normal(size=257)
    rs = np.random.RandomState(7)
    means = [rs.choice(x, size=len(x)).mean() for _ in range(300)]
    mean, lo, hi = bootstrap_ci(x, n_boot=300, seed=7, chunk=64)
    assert mean == pytest.approx(np.mean(means), abs=1e-12)
    assert lo == pytest.approx(np.percentile(means, 2.5), abs=1e-12)
    assert hi == pytest.approx(np.percentile(means, 97.5), abs=1e-12)
    assert lo < x.mean() < hi


def test_ips_dm_dr_recover_a_known_policy_value():
    """Uniform logging over 5 actions x 2 positions; the target puts action 4 first and 3 second.
    True value = mean of the true click rates of those (action, position) pairs."""
    rng = np.random.default_rng(3)
    n, A, L = 40_000, 5, 2
    ctr = np.array([0.05, 0.1, 0.15, 0.2, 0.3])[:, None] * np.array([1.0, 0.6])[None, :]   # [A, L]
    action = rng.integers(0, A, n)
    position = rng.integers(0, L, n)
    reward = (rng.random(n) < ctr[action, position]).astype(float)
    pscore = np.full(n, 1 / A)
    target = np.zeros((A, L))
    target[4, 0] = target[3, 1] = 1.0
    dist = np.broadcast_to(target, (n, A, L))
    truth = np.mean([ctr[4, 0], ctr[3, 1]])          # positions are uniform in the log
    q_good = np.broadcast_to(ctr, (n, A, L))
    q_bad = np.broadcast_to(np.full((A, L), 0.1), (n, A, L))
    inputs = dict(reward=reward, action=action, position=position, pscore=pscore, action_dist=dist)
    for name in ("ips", "snips"):
        r = estimate(name, n_boot=500, **inputs)
        assert r["ci_low"] <= truth <= r["ci_high"], (name, r, truth)
    # DM with the true model: exact up to the log's share of each position (not exactly 1/2)
    share = np.bincount(position, minlength=L) / n
    assert estimate("dm", q_hat=q_good, n_boot=200, **inputs)["estimate"] == pytest.approx(
        share[0] * ctr[4, 0] + share[1] * ctr[3, 1])
    # a wrong reward model: DM is biased, DR corrects it
    assert abs(estimate("dm", q_hat=q_bad, n_boot=200, **inputs)["estimate"] - truth) > 0.1
    r = estimate("dr", q_hat=q_bad, n_boot=500, **inputs)
    assert r["ci_low"] <= truth <= r["ci_high"], r

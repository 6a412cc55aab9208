"""ope.thompson: the Monte-Carlo slate distribution of Bernoulli Thompson sampling."""
from __future__ import annotations

import numpy as np
import pytest

from ope.thompson import sample_slate, slate_distribution, zozotown_prior


def test_columns_are_distributions_and_follow_the_posteriors():
    alpha = np.array([1.0, 5.0, 50.0, 2.0])
    beta = np.array([50.0, 50.0, 50.0, 50.0])
    d = slate_distribution(alpha, beta, 2, n_sim=20_000, seed=1)
    assert d.shape == (4, 2)
    assert np.allclose(d.sum(axis=0), 1.0)
    assert d[2, 0] > 0.99                      # mean 0.5 vs <= 0.09: always first
    assert d[1, 1] > 0.8                       # the second best is mostly second
    assert d[0, 0] == 0.0


def test_same_stream_as_drawing_one_slate_at_a_time():
    """RandomState.beta over an [n_sim, A] block draws in row order: the distribution equals the
    one built slate by slate (obp's compute_batch_action_dist loop) for the same seed."""
    rng_a = np.random.default_rng(0)
    alpha, beta = rng_a.uniform(1, 30, 12), rng_a.uniform(10, 300, 12)
    rs = np.random.RandomState(99)
    counts = np.zeros((12, 3))
    for _ in range(500):
        top = rs.beta(alpha, beta).argsort()[::-1][:3]
        for p in range(3):
            counts[top[p], p] += 1
    assert np.array_equal(slate_distribution(alpha, beta, 3, n_sim=500, seed=99, chunk=128), counts / 500)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="> 0"):
        slate_distribution(np.array([0.0, 1.0]), np.array([1.0, 1.0]), 1, n_sim=10)
    with pytest.raises(ValueError, match="len_list"):
        slate_distribution(np.ones(2), np.ones(2), 3, n_sim=10)


def test_sample_slate_and_the_shipped_prior():
    alpha, beta = zozotown_prior("all")
    assert len(alpha) == len(beta) == 80 and (alpha > 0).all() and (beta > 0).all()
    slate = sample_slate(np.random.default_rng(0), alpha, beta, 3)
    assert len(set(slate.tolist())) == 3
    with pytest.raises(ValueError, match="no Bernoulli-TS prior"):
        zozotown_prior("kids")

"""policy.explore / policy.randomise / policy.page: slots, Monte-Carlo propensities, the race."""
from __future__ import annotations

import numpy as np
import pytest

from policy.explore import ExploreConfig, exploration_slots, explore_page, posteriors
from policy.page import PageConfig, build_page
from policy.randomise import randomise_top


def test_exploration_slots():
    assert exploration_slots(20, 0.0) == []
    assert exploration_slots(20, 0.1) == [2, 19]
    assert exploration_slots(10, 0.1) == [2]
    assert exploration_slots(2, 0.1) == [1]
    assert all(0 <= s < 20 for s in exploration_slots(20, 0.3)) and len(exploration_slots(20, 0.3)) == 6


def test_one_cold_stream_always_takes_the_exploration_slot():
    order = np.array([3, 0, 1, 2, 4])                       # the ranker's order of 5 candidates
    cold = np.array([False, False, False, False, True])
    a, b = np.ones(5), np.ones(5)
    page, prop, explored = explore_page(order, cold, a, b, 4, [2], np.random.default_rng(0), 200)
    assert page.tolist() == [3, 0, 4, 1] and explored.tolist() == [False, False, True, False]
    assert prop.tolist() == [1.0, 1.0, 1.0, 1.0]             # nothing random here


def test_propensities_match_the_exact_probability():
    """Two cold streams off the page, one exploration slot: P(stream 2 explored) = P(θ2 > θ3)."""
    order = np.array([0, 1, 2, 3])
    cold = np.array([False, False, True, True])
    a, b = np.array([1.0, 1.0, 3.0, 1.0]), np.array([1.0, 1.0, 7.0, 9.0])
    rng = np.random.default_rng(1)
    exact = np.mean(rng.beta(3, 7, 400_000) > rng.beta(1, 9, 400_000))          # ≈ 0.85
    seen = []
    for seed in range(40):
        page, prop, explored = explore_page(order, cold, a, b, 2, [1], np.random.default_rng(seed), 4000)
        assert page[0] == 0 and prop[0] == 1.0 and explored.tolist() == [False, True]
        seen.append(prop[1] if page[1] == 2 else 1 - prop[1])
    assert np.mean(seen) == pytest.approx(exact, abs=0.01)


def test_exploration_never_demotes_a_cold_stream_the_ranker_shows():
    order = np.array([4, 0, 1, 2, 3, 5])                    # the cold stream 4 is ranked first
    cold = np.array([False, False, False, False, True, True])
    page, prop, explored = explore_page(order, cold, np.ones(6), np.ones(6), 4, [2], np.random.default_rng(0), 100)
    assert page.tolist() == [4, 0, 5, 1] and explored.tolist() == [False, False, True, False]
    assert prop.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_randomised_top_is_a_permutation_with_propensity_one_over_k():
    page, prop = randomise_top(np.arange(12), 10, np.random.default_rng(3))
    assert sorted(page[:10].tolist()) == list(range(10)) and page[10:].tolist() == [10, 11]
    assert prop[:10].tolist() == [0.1] * 10 and prop[10:].tolist() == [1.0, 1.0]


def test_build_page_switches():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    off = PageConfig(explore=ExploreConfig(share=0.0), randomise_share=0.0)
    p = build_page(scores, 4, off, np.random.default_rng(0))
    assert p.index.tolist() == [0, 1, 2, 3] and p.policy == ["ranked"] * 4 and p.propensity.tolist() == [1.0] * 4
    rnd = PageConfig(explore=ExploreConfig(share=0.0), randomise_share=1.0, randomise_top=3)
    p = build_page(scores, 4, rnd, np.random.default_rng(0))
    assert sorted(p.index[:3].tolist()) == [0, 1, 2] and p.index[3] == 3
    assert p.policy == ["randomised"] * 3 + ["ranked"]
    ex = PageConfig(explore=ExploreConfig(share=0.25, cold_below=10), randomise_share=0.0)
    imps = np.array([500, 500, 500, 500, 500, 0.0])          # the last (lowest-scored) stream is new
    p = build_page(scores, 4, ex, np.random.default_rng(0), clicks=np.zeros(6) + 5, impressions=imps, base="popularity")
    assert p.index.tolist() == [0, 1, 5, 2] and p.policy == ["popularity", "popularity", "explore", "popularity"]
    with pytest.raises(ValueError):
        ExploreConfig(share=1.0)
    with pytest.raises(ValueError):
        PageConfig(randomise_top=1)


def test_posteriors_shrink_to_the_mean_click_rate():
    a, b = posteriors(np.array([10, 0, 0]), np.array([100, 100, 0]), prior_strength=20)
    mean = 10 / 200
    assert a.tolist() == pytest.approx([20 * mean + 10, 20 * mean, 20 * mean])
    assert b.tolist() == pytest.approx([20 * (1 - mean) + 90, 20 * (1 - mean) + 100, 20 * (1 - mean)])

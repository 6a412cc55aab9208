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


def test_the_gate_explores_only_draws_above_the_threshold_and_propensities_follow():
    """Thompson with a threshold: the one cold stream takes the slot with P(θ >= threshold); when it
    does not, the slot is the ranker's, and both outcomes' propensities are those probabilities."""
    order = np.array([0, 1, 2, 3])
    cold = np.array([False, False, False, True])
    a, b = np.array([1.0, 1.0, 1.0, 2.0]), np.array([1.0, 1.0, 1.0, 38.0])     # θ3 ~ Beta(2, 38), mean 0.05
    thr = 0.08
    exact = float(np.mean(np.random.default_rng(5).beta(2, 38, 400_000) >= thr))   # ≈ 0.2
    took, props = [], []
    for seed in range(300):
        page, prop, explored = explore_page(order, cold, a, b, 3, [2], np.random.default_rng(seed), 2000,
                                            threshold=thr)
        assert page[:2].tolist() == [0, 1] and prop[:2].tolist() == [1.0, 1.0]
        took.append(bool(explored[2]))
        assert page[2] == (3 if explored[2] else 2)
        props.append(prop[2] if explored[2] else 1 - prop[2])
    assert np.mean(took) == pytest.approx(exact, abs=0.06)
    assert np.mean(props) == pytest.approx(exact, abs=0.01)
    # no threshold: the slot is always explored
    page, prop, explored = explore_page(order, cold, a, b, 3, [2], np.random.default_rng(0), 200)
    assert explored[2] and prop[2] == 1.0


def test_the_vectorised_pages_match_a_loop_over_the_draws():
    rng = np.random.default_rng(7)
    n = 30
    order = rng.permutation(n)
    cold = rng.random(n) < 0.5
    a, b = rng.uniform(1, 5, n), rng.uniform(5, 40, n)
    slots = exploration_slots(10, 0.3)
    page, prop, explored = explore_page(order, cold, a, b, 10, slots, np.random.default_rng(3), 500, threshold=0.1)
    # the same draws, page by page
    r = np.random.default_rng(3)
    rank_of = np.empty(n, int)
    rank_of[order] = np.arange(n)
    cold_idx = np.flatnonzero(cold & (rank_of >= 10))
    theta = r.beta(a[cold_idx], b[cold_idx], size=(500, len(cold_idx)))
    pages = []
    for s in range(500):
        good = [cold_idx[i] for i in np.argsort(-theta[s], kind="stable") if theta[s, i] >= 0.1][:len(slots)]
        pg = [None] * 10
        for j, c in enumerate(good):
            pg[slots[j]] = c
        rest = iter([c for c in order if c not in good])
        pages.append([c if c is not None else next(rest) for c in pg])
    pages = np.array(pages)
    assert page.tolist() == pages[0].tolist()
    np.testing.assert_allclose(prop, (pages == pages[0][None, :]).mean(0))

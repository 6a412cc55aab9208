"""ranking.position_bias: intervention harvesting recovers a planted examination curve where the
slot is confounded with relevance (the naive per-slot CTR is far off), per page; unknown slots are
ignored; too little data gives None; the table fits BiasNet's."""
import numpy as np
import pandas as pd
import pytest

from ranking.position_bias import harvest_examination, harvest_from_frame

POWER = 0.7


def _confounded_log(n_pairs=8000, per_pair=8, seed=0, page_level=None):
    """Pairs with a fixed relevance; a policy that puts relevant pairs on top (plus noise), so the
    CTR per slot mixes the slot's effect with the relevance the policy put there."""
    rng = np.random.default_rng(seed)
    rel = rng.uniform(0.05, 0.7, n_pairs)
    pair = np.repeat(np.arange(n_pairs), per_pair)
    r = rel[pair]
    score = 4 * r + rng.normal(0, 1.2, len(pair))
    q = pd.Series(-score).rank(pct=True).to_numpy()                  # the policy's quantile: top = relevant
    pos = np.clip(np.ceil(10 * q), 1, 10).astype(int)
    page = np.ones(len(pair), int) if page_level is None else rng.integers(1, 1 + len(page_level), len(pair))
    level = 1.0 if page_level is None else np.asarray(page_level)[page - 1]
    click = (rng.random(len(pair)) < level * pos.astype(float) ** -POWER * r).astype(int)
    return pos, click, pair, page


def test_recovers_a_confounded_curve():
    pos, click, pair, page = _confounded_log()
    true = np.arange(1, 11) ** -POWER
    ctr = pd.Series(click).groupby(pos).mean().to_numpy()
    assert np.abs(ctr / ctr[0] - true).max() > 0.1                   # the naive reading is confounded
    curve = harvest_examination(pos, click, pair, page, n_positions=16, n_pages=4)
    assert curve is not None and curve.max_position == 10
    assert np.abs(curve.curve(1) - true).max() <= 0.03, curve.curve(1)
    t = curve.log_exam
    assert t.shape == (4, 16) and (t <= 1e-6).all() and (t[:, 0] == 0).all()
    assert (np.diff(t[1, 1:]) <= 1e-6).all()                         # monotone
    assert (t[1, 11:] == t[1, 10]).all()                             # deeper slots: as the deepest seen
    assert curve.pairs > 1000 and curve.rows <= len(pos) and curve.clicks <= click.sum()
    d = curve.as_dict()
    assert d["curve"][0] == 1.0 and len(d["curve"]) == 10


def test_page_levels_and_unknown_slots():
    pos, click, pair, page = _confounded_log(n_pairs=6000, page_level=[1.0, 0.5])
    pos = pos.copy()
    pos[::7] = 0                                                     # unknown slots are dropped
    curve = harvest_examination(pos, click, pair, page, n_positions=16, n_pages=4)
    ratio = np.exp(curve.log_exam[2, 1] - curve.log_exam[1, 1])      # page 2 is seen half as often
    assert ratio == pytest.approx(0.5, abs=0.06)
    assert curve.reference_page == 1 and curve.log_exam[1, 1] == pytest.approx(0.0, abs=1e-6)
    assert np.abs(curve.curve(2) - np.arange(1, 11) ** -POWER).max() <= 0.04


def test_too_little_data_and_bad_input():
    pos, click, pair, page = _confounded_log(n_pairs=40, per_pair=3)
    assert harvest_examination(pos, click, pair, page) is None
    # one slot per pair carries nothing, whatever the volume
    assert harvest_examination(np.ones(5000, int), np.ones(5000, int), np.arange(5000) // 5) is None
    with pytest.raises(ValueError, match="one length"):
        harvest_examination([1, 2], [0], [0, 0])


def test_from_frame_numbers_pages_like_the_inputs():
    pos, click, pair, page = _confounded_log(n_pairs=3000, page_level=[1.0, 0.6])
    names = np.array(["home", "live_tab"])[page - 1]
    f = pd.DataFrame({"user_id": pair // 50, "stream_id": pair % 50 + 1000 * (pair // 50), "position": pos,
                      "click": click, "page": names})
    curve = harvest_from_frame(f, ["home", "live_tab"], n_positions=16, n_pages=4)
    assert curve.reference_page == 1                                 # "home" = index 1, seen more
    assert np.exp(curve.log_exam[2, 1]) == pytest.approx(0.6, abs=0.08)
    assert harvest_from_frame(f.drop(columns="position"), []) is None


def test_slot_ips_weights_upweight_clicks_at_rarely_seen_slots():
    from ranking.position_bias import slot_ips_weights
    pos = np.array([1, 2, 3, 4, 0, 9, 3])
    click = np.array([1, 1, 0, 1, 1, 1, 1])
    w = slot_ips_weights(pos, click, [1.0, 0.5, 0.25, float("nan")], max_weight=3.0)
    # slot 4 has no estimate: the slot above's (0.25); slot 9: past the end, the last value; unknown slot 0: 1
    assert w.tolist() == [1.0, 2.0, 1.0, 3.0, 1.0, 3.0, 3.0]

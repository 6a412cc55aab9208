"""ope.page_value: the item-position IPS value of a ranking from randomised requests is unbiased for
the expected clicks of the ranking (planted click model), and orders good and bad rankings."""
import numpy as np
import pandas as pd
import pytest

from ope.page_value import page_value


def _randomised_log(n_req=6000, K=5, seed=0):
    """Each request: K streams with relevance r, shown in a uniformly random order, clicked with
    (slot)^-0.7 · r. Plus a ranked request per randomised one (not randomised: ignored)."""
    rng = np.random.default_rng(seed)
    rel = rng.uniform(0.05, 0.6, (n_req, K))
    perm = np.argsort(rng.random((n_req, K)), axis=1)              # slot of stream j = perm[:, j] + 1
    pos = perm + 1
    click = rng.random((n_req, K)) < pos ** -0.7 * rel
    rows = pd.DataFrame({"request_id": np.repeat([f"r{i}" for i in range(n_req)], K),
                         "position": pos.ravel(), "click": click.ravel().astype(int),
                         "policy": "randomised", "rel": rel.ravel()})
    ranked = rows.iloc[: 2 * K].assign(request_id=lambda d: "x" + d["request_id"], policy="ranked", click=1)
    return pd.concat([rows, ranked], ignore_index=True), rel


def _true_value(rel, order_scores):
    """Expected clicks of ordering each request's streams by order_scores (higher first)."""
    slot = np.argsort(np.argsort(-order_scores, axis=1), axis=1) + 1
    return float((slot ** -0.7 * rel).sum(1).mean())


def test_unbiased_for_the_target_ranking_and_it_orders_policies():
    frame, rel = _randomised_log()
    R, K = rel.shape
    good = frame["rel"].to_numpy()                              # the truth's order
    bad = -good
    v_good = page_value(frame, good, n_boot=300)
    v_bad = page_value(frame, bad, n_boot=300)
    assert v_good["requests"] == R and v_good["k_mean"] == K     # the ranked request is not counted
    tg = _true_value(rel, rel)
    tb = _true_value(rel, -rel)
    assert v_good["ci_low"] <= tg <= v_good["ci_high"]
    assert v_bad["ci_low"] <= tb <= v_bad["ci_high"]
    assert v_good["estimate"] == pytest.approx(tg, rel=0.06) and v_bad["estimate"] == pytest.approx(tb, rel=0.06)
    assert v_good["ci_low"] > v_bad["ci_high"]
    # the random order's own value sits between them
    assert v_bad["estimate"] < v_good["logged"] < v_good["estimate"]


def test_too_few_randomised_requests_or_none_gives_none():
    frame, _ = _randomised_log(n_req=10)
    assert page_value(frame, np.zeros(len(frame))) is None
    assert page_value(frame.assign(policy="ranked"), np.zeros(len(frame)), min_requests=1) is None
    with pytest.raises(ValueError, match="one score per row"):
        page_value(frame, np.zeros(3))

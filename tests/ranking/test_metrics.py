"""ranking.metrics against brute-force definitions on random data (with many ties)."""
import math

import numpy as np
import pytest

from ranking.metrics import auc, gauc, group_aucs, logloss, per_query, query_metrics


def brute_auc(y, s):
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    if not pos or not neg:
        return float("nan")
    tot = 0.0
    for p in pos:
        for q in neg:
            tot += 1.0 if p > q else 0.5 if p == q else 0.0
    return tot / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 5, n).astype(float) if seed % 2 else rng.normal(size=n)
    assert auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12) or (math.isnan(auc(y, s))
                                                                      and math.isnan(brute_auc(y, s)))


def test_auc_edge_cases():
    assert auc([1, 0], [0.9, 0.1]) == 1.0
    assert auc([1, 0], [0.1, 0.9]) == 0.0
    assert auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert math.isnan(auc([], []))
    with pytest.raises(ValueError):
        auc([1, 0], [0.1])
    with pytest.raises(ValueError):
        auc([1, 0], [np.nan, 0.1])


@pytest.mark.parametrize("seed", range(4))
def test_gauc_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n = 300
    groups = rng.integers(0, 25, n) * 7 - 3           # non-contiguous, negative ids
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(rng.normal(size=n) + y * 0.5, 1)     # ties
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        a = brute_auc(y[m], s[m])
        if not math.isnan(a):
            num += a * m.sum()
            den += m.sum()
    assert gauc(y, s, groups) == pytest.approx(num / den, abs=1e-12)
    uniq, aucs, sizes = group_aucs(y, s, groups)
    for g, a, k in zip(uniq, aucs, sizes):
        m = groups == g
        assert k == m.sum()
        b = brute_auc(y[m], s[m])
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_gauc_without_mixed_groups_is_nan():
    assert math.isnan(gauc([1, 0], [0.3, 0.2], [1, 2]))


def test_logloss_matches_definition():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    p[:3] = [0.0, 1.0, 0.5]
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    want = -np.mean([a * math.log(b) + (1 - a) * math.log(1 - b) for a, b in zip(y, pc)])
    assert logloss(y, p, eps=eps) == pytest.approx(want, rel=1e-12)
    assert logloss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))


def brute_queries(groups, label, score, ks=(1, 10)):
    rows = []
    for i in np.flatnonzero(label == 1):
        m = groups == groups[i]
        others = np.delete(score[m], np.flatnonzero(np.flatnonzero(m) == i)[0])
        if len(others) < 1:
            continue
        rank = 1 + int((others > score[i]).sum())
        a = ((others < score[i]).sum() + 0.5 * (others == score[i]).sum()) / len(others)
        rows.append((1 / rank, a, *[rank <= k for k in ks]))
    r = np.array(rows, float)
    out = {"auc": r[:, 1].mean(), "mrr": r[:, 0].mean(), "n": len(r)}
    for j, k in enumerate(ks):
        out[f"hr@{k}"] = r[:, 2 + j].mean()
    return out


@pytest.mark.parametrize("seed", range(4))
def test_query_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 500
    groups = rng.integers(0, 40, n)
    label = (rng.random(n) < 0.15).astype(int)
    score = rng.integers(0, 6, n).astype(float) if seed % 2 else rng.normal(size=n)
    got = query_metrics(groups, label, score, ks=(1, 3, 10))
    want = brute_queries(groups, label, score, ks=(1, 3, 10))
    assert got["n"] == want["n"]
    for k in ("auc", "mrr", "hr@1", "hr@3", "hr@10"):
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_query_metrics_conventions():
    # one query: positive tied with one candidate, below one, above one -> rank 2, auc (1 + .5) / 3
    groups = [1, 1, 1, 1, 2]
    label = [1, 0, 0, 0, 1]                 # group 2 has one row: skipped
    score = [0.5, 0.5, 0.9, 0.1, 0.3]
    got = query_metrics(groups, label, score)
    assert got == {"auc": pytest.approx(0.5), "hr@1": 0.0, "hr@10": 1.0, "mrr": 0.5, "n": 1}
    pq = per_query(groups, label, score)
    assert pq["rank"].tolist() == [2] and pq["index"].tolist() == [0]
    empty = query_metrics([1], [1], [0.2])
    assert empty["n"] == 0 and math.isnan(empty["auc"])

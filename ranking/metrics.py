"""Ranking and classification metrics (numpy only, vectorised).

- :func:`auc`: ROC AUC from average ranks (ties count one half) — the Mann-Whitney U statistic.
- :func:`gauc`: group AUC — the impression-weighted mean of the per-group AUC over the groups that
  hold both classes (groups = users, as in the GAUC of the DIN / 1688 articles).
- :func:`logloss`: mean binary cross-entropy with probabilities clipped to ``[eps, 1 - eps]``.
- :func:`query_metrics`: per-query ranking metrics of a candidate set; every positive row of a group
  is one query scored against ALL the other rows of its group (other positives included):
  ``rank = 1 + #candidates strictly above the positive`` (a deterministic convention: ties do not
  hurt), ``hr@k = rank <= k``, ``mrr = mean 1/rank``, the query's AUC = (#below + ½·#tied) / (n - 1).
  This matches ``shared/tools/twitch_reference.py`` (which breaks ties with tiny noise first).

Every function returns ``nan`` where the metric is undefined (one class only, no queries).
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np


def _arr(x, dtype=float) -> np.ndarray:
    a = np.asarray(x, dtype=dtype).reshape(-1)
    return a


def _check(y: np.ndarray, s: np.ndarray) -> None:
    if len(y) != len(s):
        raise ValueError(f"length mismatch: {len(y)} labels, {len(s)} scores")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")


def _dense_codes(values: np.ndarray) -> np.ndarray:
    """Dense 0-based codes that preserve the order of ``values`` (equal values share a code)."""
    _, inv = np.unique(values, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def _group_avg_ranks(group: np.ndarray, score: np.ndarray):
    """1-based average ranks of ``score`` within each group (ties share their mean rank).

    Returns (ranks, group codes, group sizes) aligned with the input rows.
    """
    g = _dense_codes(group)
    r = _dense_codes(score)
    n_r = int(r.max()) + 1 if len(r) else 1
    key = g * n_r + r
    order = np.argsort(key, kind="stable")
    ks = key[order]
    n = len(ks)
    # first index of each key value and of each group in the sorted order
    first_key = np.searchsorted(ks, ks, side="left")
    last_key = np.searchsorted(ks, ks, side="right")           # exclusive
    gs = g[order]
    first_grp = np.searchsorted(gs, gs, side="left")
    avg = (first_key - first_grp) + (last_key - first_key + 1) / 2.0
    ranks = np.empty(n)
    ranks[order] = avg
    sizes = np.bincount(g, minlength=int(g.max()) + 1 if n else 0)
    return ranks, g, sizes


def auc(y, score) -> float:
    """ROC AUC of ``score`` for binary labels ``y`` (ties = ½). ``nan`` when a class is missing."""
    y = _arr(y)
    s = _arr(score)
    _check(y, s)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks, _, _ = _group_avg_ranks(np.zeros(len(s), np.int64), s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def group_aucs(y, score, groups):
    """Per-group AUC. Returns (group values, auc per group (nan when one class), rows per group)."""
    y = _arr(y)
    s = _arr(score)
    _check(y, s)
    groups = np.asarray(groups).reshape(-1)
    if len(groups) != len(y):
        raise ValueError("groups must have one value per row")
    if len(y) == 0:
        return np.asarray([]), np.asarray([]), np.asarray([], np.int64)
    uniq = np.unique(groups)
    ranks, g, sizes = _group_avg_ranks(groups, s)
    pos = (y > 0.5).astype(float)
    n_pos = np.bincount(g, weights=pos, minlength=len(sizes))
    n_neg = sizes - n_pos
    rank_sum = np.bincount(g, weights=ranks * pos, minlength=len(sizes))
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    a[(n_pos == 0) | (n_neg == 0)] = np.nan
    return uniq, a, sizes


def gauc(y, score, groups) -> float:
    """Impression-weighted mean of the per-group AUC over groups holding both classes."""
    _, a, sizes = group_aucs(y, score, groups)
    ok = ~np.isnan(a)
    if not ok.any():
        return float("nan")
    return float(np.sum(a[ok] * sizes[ok]) / np.sum(sizes[ok]))


def logloss(y, p, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy; probabilities clipped to [eps, 1 - eps]."""
    y = _arr(y)
    p = _arr(p)
    _check(y, p)
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def positive_ranks(groups, label, score):
    """For every positive row: how many rows of its group score strictly above / tied / below.

    Returns a dict of arrays aligned with the positive rows (in input order): ``index`` (row
    positions), ``above``, ``tied`` (other rows with an equal score), ``below``, ``n`` (group size).
    """
    label = _arr(label)
    s = _arr(score)
    _check(label, s)
    groups = np.asarray(groups).reshape(-1)
    g = _dense_codes(groups) if len(groups) else np.zeros(0, np.int64)
    r = _dense_codes(s) if len(s) else np.zeros(0, np.int64)
    n_r = int(r.max()) + 2 if len(r) else 2
    key = g * n_r + r
    ks = np.sort(key)
    idx = np.flatnonzero(label > 0.5)
    kq = key[idx]
    gq = g[idx]
    lo = np.searchsorted(ks, kq, side="left")
    hi = np.searchsorted(ks, kq, side="right")
    g_start = np.searchsorted(ks, gq * n_r, side="left")
    g_end = np.searchsorted(ks, (gq + 1) * n_r, side="left")
    return {"index": idx, "above": g_end - hi, "tied": hi - lo - 1, "below": lo - g_start,
            "n": g_end - g_start}


def query_metrics(groups, label, score, ks: Iterable[int] = (1, 10), min_candidates: int = 2) -> dict:
    """Ranking metrics over queries: each positive row vs the other rows of its group.

    Queries whose group has fewer than ``min_candidates`` rows are skipped. Returns
    ``{"auc", "hr@k"..., "mrr", "n"}`` (means over queries; ``n`` = number of queries).
    """
    pr = positive_ranks(groups, label, score)
    ok = pr["n"] >= max(2, int(min_candidates))
    above, tied, below, n = (pr[k][ok] for k in ("above", "tied", "below", "n"))
    out: dict = {}
    if len(n) == 0:
        out["auc"] = float("nan")
        for k in ks:
            out[f"hr@{k}"] = float("nan")
        out["mrr"] = float("nan")
        out["n"] = 0
        return out
    rank = above + 1
    out["auc"] = float(np.mean((below + 0.5 * tied) / (n - 1)))
    for k in ks:
        out[f"hr@{k}"] = float(np.mean(rank <= k))
    out["mrr"] = float(np.mean(1.0 / rank))
    out["n"] = int(len(n))
    return out


def per_query(groups, label, score, min_candidates: int = 2) -> dict:
    """Per-query arrays (rank, auc, group size, row index of the positive) — for custom reports."""
    pr = positive_ranks(groups, label, score)
    ok = pr["n"] >= max(2, int(min_candidates))
    above, tied, below, n = (pr[k][ok] for k in ("above", "tied", "below", "n"))
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (below + 0.5 * tied) / (n - 1)
    return {"index": pr["index"][ok], "rank": above + 1, "auc": a, "n": n}


def summarize(values: dict, digits: Optional[int] = 4) -> dict:
    """Round the float entries of a metrics dict (ints and non-numbers kept)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (float, np.floating)) and digits is not None:
            out[k] = None if np.isnan(v) else round(float(v), digits)
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


__all__ = ["auc", "gauc", "group_aucs", "logloss", "positive_ranks", "query_metrics", "per_query", "summarize"]

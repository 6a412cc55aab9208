r"""Retrieval metrics over a whole catalog, with ties broken uniformly at random (in expectation).

For a query whose target scores :math:`s^*`, let ``above`` = #candidates scoring strictly more and
``tied`` = #other candidates scoring exactly :math:`s^*`; under a uniformly random tie-break the
rank is :math:`1 + \mathit{above} + U\{0..\mathit{tied}\}`, so

.. math::  \mathrm{recall@}k = \mathrm{clip}\Big(\frac{k - \mathit{above}}{\mathit{tied} + 1}, 0, 1\Big),
           \qquad \mathrm{ndcg@}10 = \frac{1}{\mathit{tied}+1}\sum_{r = \mathit{above}+1}^{\mathit{above}+\mathit{tied}+1}
           \frac{[r \le 10]}{\log_2(r + 1)}

(one relevant item per query: the ideal DCG is 1). Integer-valued heuristics (popularity counts,
repeat counts) are judged fairly this way, without a seed.
"""
from __future__ import annotations

import numpy as np

KS = (10, 50, 200)


def rank_stats(scores: np.ndarray, target_col: np.ndarray, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(above, tied)`` per row of ``scores [B, N]`` for the target column ``target_col [B]``;
    ``allowed [B, N]`` (optional) masks the candidates out of the catalog (e.g. not live)."""
    scores = np.asarray(scores, dtype=np.float64)
    b = np.arange(len(scores))
    ts = scores[b, target_col]
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    above = (scores > ts[:, None]).sum(1)
    tied = (scores == ts[:, None]).sum(1) - 1
    return above.astype(np.int64), np.maximum(tied, 0).astype(np.int64)


def from_ranks(above: np.ndarray, tied: np.ndarray, ks=KS) -> dict:
    """Mean recall@k and ndcg@10 of queries given ``above`` / ``tied`` (module docstring)."""
    above = np.asarray(above, dtype=np.float64)
    tied = np.asarray(tied, dtype=np.float64)
    out = {}
    if not len(above):
        return {**{f"recall@{k}": float("nan") for k in ks}, "ndcg@10": float("nan"), "n": 0}
    for k in ks:
        out[f"recall@{k}"] = round(float(np.mean(np.clip((k - above) / (tied + 1), 0, 1))), 4)
    # sum_{r=a+1}^{a+t+1} [r<=10]/log2(r+1) = G(min(a+t+1,10)) - G(min(a,10)), G(m) = sum_{r<=m} 1/log2(r+1)
    g = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, 12)))]
    hi = np.minimum(above + tied + 1, 10).astype(np.int64)
    lo = np.minimum(above, 10).astype(np.int64)
    out["ndcg@10"] = round(float(np.mean((g[hi] - g[lo]) / (tied + 1))), 4)
    out["n"] = int(len(above))
    return out


def ranked_list_stats(lists: list, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(above, tied)`` for ranked candidate lists (no ties): the target at 0-based position
    ``p`` has ``above = p``; a target not in its list counts as rank infinity."""
    above = np.empty(len(targets), np.int64)
    for i, (lst, t) in enumerate(zip(lists, targets)):
        hit = np.flatnonzero(np.asarray(lst) == t)
        above[i] = hit[0] if len(hit) else 10 ** 9
    return above, np.zeros(len(targets), np.int64)


__all__ = ["KS", "rank_stats", "from_ranks", "ranked_list_stats"]

"""Thompson sampling for cold streams: new streams get a share of the page until they have a history.

A stream with fewer than ``cold_below`` impressions is *cold*. Each has a Beta posterior of its
click rate from its counters, with a prior of ``prior_strength`` pseudo-impressions at the
candidates' mean click rate ĉ:

    θ_s ~ Beta(α₀ + clicks_s, β₀ + impressions_s − clicks_s),   α₀ = n₀ ĉ,  β₀ = n₀ (1 − ĉ)

The page keeps ``m = max(1, round(share · k))`` exploration slots (spread from position 3 down the
page). Per request one θ is drawn for every cold candidate the ranker leaves off the page; the m
highest take the exploration slots (the highest first), and every other slot is filled by the
ranker's order (cold streams it ranks on the page stay in it: exploration never demotes). This is seed 000's "race": a cold stream that gets clicks rises
in its posterior and keeps winning slots until it graduates into the ranker's order; one that
does not, fades.

The page is random (through θ), so a slot's propensity is P(stream s at slot p), estimated from
``n_sim`` Monte-Carlo pages built the same way (vectorised; the served page is the first of them,
so every served slot has a propensity ≥ 1 / n_sim).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class ExploreConfig:
    share: float = 0.1             # share of the page's slots for cold streams (0 = off)
    cold_below: int = 100          # impressions under which a stream is cold
    prior_strength: float = 20.0   # pseudo-impressions of the prior, at the candidates' mean click rate
    n_sim: int = 200               # Monte-Carlo pages for the propensities
    max_cold: int = 50             # cold candidates in the race (the ranker's best of them)
    method: str = "thompson"       # "uniform": a uniformly random cold stream per slot (ε-greedy's choice)
    gate: bool = False             # Thompson: explore only when the draw beats the candidates' mean click rate

    def __post_init__(self):
        if self.method not in ("thompson", "uniform"):
            raise ValueError(f"explore method must be thompson or uniform, got {self.method!r}")
        if not 0.0 <= self.share < 1.0:
            raise ValueError(f"explore share must be in [0, 1), got {self.share}")
        if self.cold_below < 0 or self.prior_strength <= 0 or self.n_sim < 1:
            raise ValueError("cold_below >= 0, prior_strength > 0 and n_sim >= 1 are required")


def exploration_slots(k: int, share: float) -> list[int]:
    """0-based slots kept for exploration on a page of ``k``: ``max(1, round(share·k))`` of them
    (none when share is 0), evenly spaced from slot 2 (the third) to the end."""
    if share <= 0 or k < 1:
        return []
    m = min(k, max(1, int(round(share * k))))
    first = min(2, k - 1)
    return sorted({int(round(x)) for x in np.linspace(first, k - 1, m)}) if m > 1 else [first]


def mean_click_rate(clicks: np.ndarray, impressions: np.ndarray) -> float:
    """The candidates' pooled click rate (the prior's mean; 0.05 with no impressions)."""
    clicks = np.nan_to_num(np.asarray(clicks, dtype=float), nan=0.0).clip(min=0)
    imps = np.maximum(np.nan_to_num(np.asarray(impressions, dtype=float), nan=0.0), clicks)
    total = imps.sum()
    mean = clicks.sum() / total if total > 0 else 0.05
    return float(np.clip(mean, 1e-3, 0.999))


def posteriors(clicks: np.ndarray, impressions: np.ndarray, prior_strength: float) -> tuple[np.ndarray, np.ndarray]:
    clicks = np.nan_to_num(np.asarray(clicks, dtype=float), nan=0.0).clip(min=0)
    imps = np.maximum(np.nan_to_num(np.asarray(impressions, dtype=float), nan=0.0), clicks)
    mean = mean_click_rate(clicks, imps)
    return prior_strength * mean + clicks, prior_strength * (1 - mean) + imps - clicks


def explore_page(order: np.ndarray, cold: np.ndarray, alpha: np.ndarray, beta: np.ndarray, k: int,
                 slots: list[int], rng: np.random.Generator, n_sim: int, method: str = "thompson",
                 max_cold: int = 50, threshold: Optional[float] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(page, propensity, explored)`` for one request.

    ``order``: candidate indices by the ranker, best first; ``cold`` [n] bool; ``alpha, beta`` [n]
    (used for the cold ones); ``page`` [min(k, n)] candidate indices, slot by slot;
    ``propensity`` [len(page)]: P(that candidate at that slot) over ``n_sim`` pages;
    ``explored`` [len(page)] bool: the slot went to a cold stream through exploration. The race
    is among the ``max_cold`` cold candidates the ranker scores highest (a request's cost stays
    flat when most candidates are new). ``threshold`` (Thompson only): a cold stream takes a slot
    only when its draw θ is at least this click rate (else the slot stays the ranker's): a stream
    the log has shown to be poor stops costing clicks, where ε-greedy keeps showing it."""
    order = np.asarray(order)
    n = len(order)
    size = min(k, n)
    rank_of = np.empty(n, np.int64)
    rank_of[order] = np.arange(n)
    # only cold streams the ranker leaves off the page race: exploration adds exposure, it never
    # moves a stream the ranker already shows (a cold stream with clicks ranked first stays first)
    cold_idx = np.flatnonzero(np.asarray(cold) & (rank_of >= size))
    if len(cold_idx) > max_cold:
        cold_idx = cold_idx[np.argsort(rank_of[cold_idx], kind="stable")[:max_cold]]
    slots = [s for s in slots if s < size]
    m = min(len(slots), len(cold_idx))
    if m == 0:
        return order[:size], np.ones(size), np.zeros(size, bool)
    use = np.asarray(slots[:m])
    if method == "uniform":                                             # no posterior: any cold stream
        theta = rng.random((n_sim, len(cold_idx)))
    else:
        theta = rng.beta(alpha[cold_idx], beta[cold_idx], size=(n_sim, len(cold_idx)))
        if threshold is not None:
            theta = np.where(theta >= threshold, theta, -np.inf)
    part = np.argpartition(-theta, m - 1, axis=1)[:, :m] if m < len(cold_idx) else \
        np.broadcast_to(np.arange(len(cold_idx)), (n_sim, m))
    part_theta = np.take_along_axis(theta, part, axis=1)
    by = np.argsort(-part_theta, axis=1, kind="stable")
    top = np.take_along_axis(part, by, axis=1)                           # [S, m], best first
    valid = np.isfinite(np.take_along_axis(part_theta, by, axis=1))      # [S, m]: a prefix of each row
    chosen = cold_idx[top]                                               # [S, m] candidate indices
    # every simulated page, vectorised: the j-th valid draw takes exploration slot use[j]; the
    # other slots take the ranker's order without the chosen streams
    S = n_sim
    is_use = np.zeros((S, size), bool)
    pages = np.zeros((S, size), np.int64)
    for j in range(m):
        is_use[valid[:, j], use[j]] = True
        pages[valid[:, j], use[j]] = chosen[valid[:, j], j]
    excluded = np.sort(np.where(valid, rank_of[chosen], n), axis=1)    # [S, m] places in the order, n = none
    p = np.cumsum(~is_use, axis=1) - 1                                   # the f-th ranked slot ...
    for j in range(m):                                                   # ... takes the f-th kept place
        p += excluded[:, j:j + 1] <= p
    pages = np.where(is_use, pages, order[np.clip(p, 0, n - 1)])
    page = pages[0]                                                      # the served page: simulation 0
    propensity = (pages == page[None, :]).mean(axis=0)
    return page, propensity, is_use[0].copy()


__all__ = ["ExploreConfig", "exploration_slots", "mean_click_rate", "posteriors", "explore_page"]

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

import numpy as np


@dataclass(frozen=True)
class ExploreConfig:
    share: float = 0.1             # share of the page's slots for cold streams (0 = off)
    cold_below: int = 100          # impressions under which a stream is cold
    prior_strength: float = 20.0   # pseudo-impressions of the prior, at the candidates' mean click rate
    n_sim: int = 200               # Monte-Carlo pages for the propensities
    max_cold: int = 50             # cold candidates in the race (the ranker's best of them)
    method: str = "thompson"       # "uniform": a uniformly random cold stream per slot (ε-greedy's choice)

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


def posteriors(clicks: np.ndarray, impressions: np.ndarray, prior_strength: float) -> tuple[np.ndarray, np.ndarray]:
    clicks = np.nan_to_num(np.asarray(clicks, dtype=float), nan=0.0).clip(min=0)
    imps = np.maximum(np.nan_to_num(np.asarray(impressions, dtype=float), nan=0.0), clicks)
    total = imps.sum()
    mean = clicks.sum() / total if total > 0 else 0.05
    mean = float(np.clip(mean, 1e-3, 0.999))
    return prior_strength * mean + clicks, prior_strength * (1 - mean) + imps - clicks


def explore_page(order: np.ndarray, cold: np.ndarray, alpha: np.ndarray, beta: np.ndarray, k: int,
                 slots: list[int], rng: np.random.Generator, n_sim: int, method: str = "thompson",
                 max_cold: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(page, propensity, explored)`` for one request.

    ``order``: candidate indices by the ranker, best first; ``cold`` [n] bool; ``alpha, beta`` [n]
    (used for the cold ones); ``page`` [min(k, n)] candidate indices, slot by slot;
    ``propensity`` [len(page)]: P(that candidate at that slot) over ``n_sim`` pages;
    ``explored`` [len(page)] bool: the slot went to a cold stream through exploration. The race
    is among the ``max_cold`` cold candidates the ranker scores highest (a request's cost stays
    flat when most candidates are new)."""
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
    is_use = np.zeros(size, bool)
    is_use[use] = True
    fill = np.flatnonzero(~is_use)                                       # the ranker's slots
    if method == "uniform":                                             # no posterior: any cold stream
        theta = rng.random((n_sim, len(cold_idx)))
    else:
        theta = rng.beta(alpha[cold_idx], beta[cold_idx], size=(n_sim, len(cold_idx)))
    part = np.argpartition(-theta, m - 1, axis=1)[:, :m] if m < len(cold_idx) else \
        np.broadcast_to(np.arange(len(cold_idx)), (n_sim, m))
    part_theta = np.take_along_axis(theta, part, axis=1)
    top = np.take_along_axis(part, np.argsort(-part_theta, axis=1), axis=1)   # [S, m], best first
    chosen = cold_idx[top]                                               # [S, m] candidate indices
    chosen_rank = rank_of[chosen]                                        # their places in the ranker's order
    # the served page: simulation 0
    page = np.empty(size, np.int64)
    page[use] = chosen[0]
    rest = order[~np.isin(order, chosen[0])]
    page[fill] = rest[:len(fill)]
    propensity = np.empty(size)
    propensity[use] = (chosen == page[use][None, :]).mean(axis=0)      # P(c is the j-th best cold draw)
    # a ranked candidate c is at the f-th ranked slot when c is not chosen and exactly f of the
    # candidates ranked above it are left after the chosen ones are taken out
    cand = page[fill]
    rc = rank_of[cand]
    not_chosen = ~(chosen[:, :, None] == cand[None, None, :]).any(axis=1)          # [S, F]
    ahead = (chosen_rank[:, :, None] < rc[None, None, :]).sum(axis=1)             # [S, F]
    propensity[fill] = (not_chosen & (rc[None, :] - ahead == np.arange(len(fill))[None, :])).mean(axis=0)
    explored = np.zeros(size, bool)
    explored[use] = True
    return page, propensity, explored


__all__ = ["ExploreConfig", "exploration_slots", "posteriors", "explore_page"]

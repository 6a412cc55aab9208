"""Randomised traffic: on a share of requests the top-K of the ranked page is uniformly permuted.

Given the ranker's top-K set (deterministic), each of its streams lands on each of the K slots
with probability 1/K, whatever its relevance: the click rate by slot over these requests is the
examination curve times one common relevance, so the position curve can be read off the log
without a relevance model (seed 003 §4.5; ``streamrank position-curve``). Slots below K keep the
ranker's order (propensity 1). A randomised request does not also explore, so 1/K is exact.
"""
from __future__ import annotations

import numpy as np


def randomise_top(page: np.ndarray, top: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(page, propensity)`` with the first ``min(top, len(page))`` slots permuted."""
    page = np.asarray(page).copy()
    K = min(int(top), len(page))
    prop = np.ones(len(page))
    if K >= 2:
        page[:K] = page[:K][rng.permutation(K)]
        prop[:K] = 1.0 / K
    return page, prop


__all__ = ["randomise_top"]

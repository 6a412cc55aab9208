"""The page of a recommend: ranked, re-ranked under the diversity constraints (policy.rerank), with
cold-stream exploration or (on a share of requests) the top-K randomised; each slot labelled with
its policy and propensity.

Order of the steps: a randomised request permutes the ranker's top K (propensity 1/K; no
re-ranking, no exploration, so 1/K is exact). Otherwise the re-ranker orders the top of the page
(deterministic: propensity 1) and exploration then gives its slots to cold streams, filling the
others in the re-ranked order. Exploration and randomised slots are exempt from the diversity
constraints (a cold stream is shown for what the log learns, whatever its category)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .explore import ExploreConfig, exploration_slots, explore_page, mean_click_rate, posteriors
from .randomise import randomise_top
from .rerank import RerankConfig, rerank


@dataclass(frozen=True)
class PageConfig:
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    randomise_share: float = 0.01   # share of requests with the top-K order randomised (0 = off)
    randomise_top: int = 10         # K
    rerank: RerankConfig = field(default_factory=RerankConfig)

    def __post_init__(self):
        if not 0.0 <= self.randomise_share <= 1.0:
            raise ValueError(f"randomise share must be in [0, 1], got {self.randomise_share}")
        if self.randomise_top < 2:
            raise ValueError(f"randomise top must be >= 2, got {self.randomise_top}")


@dataclass
class Page:
    index: np.ndarray         # candidate indices, slot by slot (slot 1 first)
    propensity: np.ndarray    # P(that candidate at that slot) under the policy
    policy: list              # per slot: "ranked", "explore" or "randomised"
    reranked: bool = False    # the re-ranker ordered the top of the page
    relaxed: bool = False     # the candidates could not meet the diversity constraints


def build_page(scores: np.ndarray, k: int, cfg: PageConfig, rng: np.random.Generator, *,
               clicks: Optional[np.ndarray] = None, impressions: Optional[np.ndarray] = None,
               base: str = "ranked", categories=None, slot_value=None) -> Page:
    """The page from the candidates' ``scores`` (best first, ties in candidate order) and their
    counters (for exploration; None = no exploration). ``base``: the label of a ranked slot
    (``"popularity"`` when no model ranked). ``categories`` (per candidate; None = no
    re-ranking) and ``slot_value`` (a policy.rerank slot value, e.g. a trained slate model;
    None = the ranker's scores) drive the re-ranker."""
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    order = np.argsort(-scores, kind="stable")
    size = min(k, len(order))
    if cfg.randomise_share > 0 and rng.random() < cfg.randomise_share:
        page, prop = randomise_top(order[:size], cfg.randomise_top, rng)
        K = min(cfg.randomise_top, size)
        labels = ["randomised" if i < K and K >= 2 else base for i in range(size)]
        return Page(page, prop, labels)
    reranked = relaxed = False
    if cfg.rerank.enabled and categories is not None and size >= 2:
        rr = rerank(scores, categories, len(order), cfg.rerank, slot_value)
        order, relaxed, reranked = rr.order, rr.relaxed, True
    ex = cfg.explore
    if ex.share > 0 and clicks is not None and impressions is not None:
        imps = np.nan_to_num(np.asarray(impressions, dtype=float), nan=0.0)
        cold = imps < ex.cold_below
        if cold.any():
            alpha, beta = posteriors(clicks, imps, ex.prior_strength)
            gate = mean_click_rate(clicks, imps) if ex.gate and ex.method == "thompson" else None   # ExploreConfig.gate
            page, prop, explored = explore_page(order, cold, alpha, beta, k, exploration_slots(size, ex.share),
                                                rng, ex.n_sim, ex.method, ex.max_cold, threshold=gate)
            return Page(page, prop, ["explore" if e else base for e in explored], reranked, relaxed)
    return Page(order[:size], np.ones(size), [base] * size, reranked, relaxed)


__all__ = ["PageConfig", "Page", "build_page"]

"""An online simulation of the page policy against planted click rates: cold-start races and regret.

``n_streams`` streams with true click rates θ_s ~ Beta(2, 30) are live; after ``new_at`` of the
requests, ``n_new`` new streams go live, the first of them far better than any other
(θ = ``star_ctr``). Each request shows ``k`` slots; a stream at slot p is clicked with probability
examination(p) · θ_s, examination(p) = (p + 1)^-0.7. The ranker scores each stream by its
position-debiased click rate (clicks over examination-weighted impressions) shrunk to the mean,
which is what a ranker fitted on the log knows about a stream: a new one starts at the mean and,
never shown, stays there. The
policies: ``none`` (the ranked order), ``thompson``, ``thompson_gate`` (a slot explored only when
the draw beats the candidates' mean click rate) and ``uniform`` (ε-greedy's choice) with the same
exploration share of the page (policy.page).

Per request, regret = E[clicks | the best page] − E[clicks | the shown page], the best page being
the k highest θ in examination order. :func:`run` returns the cumulative regret, the request
(counted from the new streams' start) of each new stream's first impression and, for the star,
the first request at which it was shown in the top 3 ranked slots (None: never).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .explore import ExploreConfig
from .page import PageConfig, build_page


def run(policy: str, *, requests: int = 20_000, n_streams: int = 60, n_new: int = 5, k: int = 10,
        share: float = 0.1, cold_below: int = 100, star_ctr: float = 0.3, new_at: float = 0.25,
        seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(10_000 + seed)              # the planted world: the same for every policy
    n = n_streams + n_new
    theta = world.beta(2, 30, n)
    theta[n_streams] = star_ctr
    exam = (np.arange(k) + 1.0) ** -0.7
    imps = np.zeros(n)
    clicks = np.zeros(n)
    imps[:n_streams] = world.integers(200, 2000, n_streams)            # the old streams have a history
    clicks[:n_streams] = world.binomial(imps[:n_streams].astype(int), theta[:n_streams] * exam.mean())
    seen = imps * exam.mean()                     # examination-weighted impressions (the ranker's denominator)
    start_new = int(new_at * requests)
    if policy == "none":
        cfg = PageConfig(explore=ExploreConfig(share=0.0), randomise_share=0.0)
    elif policy in ("thompson", "uniform", "thompson_gate"):
        cfg = PageConfig(explore=ExploreConfig(share=share, cold_below=cold_below, n_sim=1,
                                               method="uniform" if policy == "uniform" else "thompson",
                                               gate=policy == "thompson_gate"), randomise_share=0.0)
    else:
        raise ValueError(f"policy must be none, thompson, thompson_gate or uniform, got {policy!r}")
    regret = np.zeros(requests)
    star_top: Optional[int] = None
    first_shown = np.full(n, -1)                  # request index (after start_new) of each stream's first impression
    for r in range(requests):
        live = n if r >= start_new else n_streams
        th = theta[:live]
        # the ranker: each stream's position-debiased click rate (clicks / examination-weighted
        # impressions) shrunk to the mean with 20 pseudo-impressions
        mean = clicks[:live].sum() / max(seen[:live].sum(), 1.0)
        score = (clicks[:live] + 20 * mean) / (seen[:live] + 20)
        page = build_page(score, k, cfg, rng, clicks=clicks[:live], impressions=imps[:live])
        shown = page.index
        p_click = exam[:len(shown)] * th[shown]
        got = rng.random(len(shown)) < p_click
        imps[shown] += 1
        seen[shown] += exam[:len(shown)]
        clicks[shown] += got
        if r >= start_new:
            new_first = shown[first_shown[shown] < 0]
            first_shown[new_first] = r - start_new
        best = np.sort(th)[::-1][:len(shown)]
        regret[r] = float((exam[:len(shown)] * best).sum() - p_click.sum())
        if star_top is None and r >= start_new:
            top3 = [i for i, pol in zip(shown[:3], page.policy[:3]) if pol != "explore"]
            if n_streams in top3:
                star_top = r - start_new
    return {"policy": policy, "requests": requests, "share": share if policy != "none" else 0.0,
            "cumulative_regret": float(regret.sum()), "regret_after_new": float(regret[start_new:].sum()),
            "star_top3_after": star_top, "star_impressions": int(imps[n_streams]), "seed": seed,
            "new_first_shown": first_shown[n_streams:].tolist(), "min_regret": float(regret.min()),
            "curve": np.cumsum(regret)}


__all__ = ["run"]

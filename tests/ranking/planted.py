"""A small planted world for the ranker's recovery tests (known relevance and examination).

relevance r = σ(-1.5 + 2·taste[u, cat(s)] + quality[s]); P(click) = pos^-0.7 · r. Slates of 10:
a share ``explore`` uniformly random, the rest ordered by quality + noise (so, as in real logs,
position correlates with relevance). The model sees taste and quality as dense features.
"""
import numpy as np
import pandas as pd

EXAM_POWER = 0.7


def planted_frame(n_requests=6000, slate=10, n_users=400, n_streams=80, n_cat=5, explore=0.3, seed=0):
    rng = np.random.default_rng(seed)
    taste = rng.dirichlet(np.full(n_cat, 0.5), size=n_users)
    cat = rng.integers(0, n_cat, n_streams)
    quality = rng.normal(0, 1, n_streams)
    rows = []
    users = rng.integers(0, n_users, n_requests)
    for q in range(n_requests):
        shown = rng.choice(n_streams, slate, replace=False)
        if rng.random() >= explore:
            shown = shown[np.argsort(-(quality[shown] + rng.normal(0, 0.7, slate)))]
        rows.append((np.full(slate, q), np.full(slate, users[q]), shown, np.arange(1, slate + 1)))
    req, user, stream, pos = (np.concatenate(c) for c in zip(*rows))
    t = taste[user, cat[stream]]
    rel = 1 / (1 + np.exp(-(-1.5 + 2.0 * t * n_cat / 2 + quality[stream])))
    exam = pos.astype(float) ** -EXAM_POWER
    click = (rng.random(len(req)) < exam * rel).astype(np.int64)
    purchase = (click & (rng.random(len(req)) < 0.3 * rel)).astype(np.int64)
    stay = np.where(click == 1, np.exp(3 + 2 * rel + rng.normal(0, 0.5, len(req))), 0.0)
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(req * 10, unit="s")
    return pd.DataFrame({
        "event_id": [f"e{i}" for i in range(len(req))], "request_id": [f"r{r}" for r in req],
        "user_id": user + 1, "stream_id": stream + 1, "category": cat[stream] + 1, "ts": ts,
        "position": pos, "page": "live_tab",
        "taste": t, "quality": quality[stream] + rng.normal(0, 0.1, len(req)),
        "click": click, "purchase": purchase, "stay_s": stay,
        "relevance": rel, "examination": exam,
    })

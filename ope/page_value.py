"""The offline value of a ranking policy from the randomised requests of the log (slot IPS).

On a randomised request (policy.randomise) the ranker's top K are shown in a uniformly random
order: each stream s lands on each slot with probability 1/K, independent of everything else. A
new policy (a ranker's scores) orders the same K streams; let t(s) be the slot it gives s. Under
the item–position click model (a stream's click probability depends on the stream and its slot,
not on its neighbours) the estimator

    V̂ = mean over requests of  Σ_s click_s · 1[shown_slot(s) = t(s)] · K

is unbiased for the expected clicks in the top K of the new order (Li et al., "Offline evaluation
of ranking policies with click models", KDD 2018 — the item-position IPS): each indicator has
probability 1/K and, when it fires, the click was observed with s at exactly the target's slot.
The same requests' mean clicks is the value of the random order itself (``logged``). The
confidence interval is the percentile bootstrap over requests (seeded).

Rows: a frame with ``request_id``, ``position`` (1-based), ``click`` and ``policy`` (the
randomised slots say ``"randomised"``; a request's randomised slots are 1..K).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

MIN_REQUESTS = 20


def randomised_requests(frame: pd.DataFrame) -> pd.Series:
    """Bool per row: the row is a slot of a randomised request's shuffled top K."""
    if "policy" not in frame.columns or "request_id" not in frame.columns:
        return pd.Series(False, index=frame.index)
    return (frame["policy"].astype(object) == "randomised") & frame["request_id"].notna() & frame["position"].notna()


def page_value(frame: pd.DataFrame, scores, *, n_boot: int = 1000, seed: int = 0,
               min_requests: int = MIN_REQUESTS) -> Optional[dict]:
    """``{"estimate", "ci_low", "ci_high", "logged", "requests", "k_mean"}`` for the policy that
    orders each randomised request's streams by ``scores`` (one per row of ``frame``, higher
    first); None when the frame has fewer than ``min_requests`` randomised requests."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) != len(frame):
        raise ValueError(f"one score per row: {len(scores)} scores for {len(frame)} rows")
    keep = randomised_requests(frame).to_numpy()
    if not keep.any():
        return None
    f = frame.loc[keep, ["request_id", "position", "click"]].copy()
    f["score"] = np.nan_to_num(scores[keep], nan=-np.inf)
    f["position"] = pd.to_numeric(f["position"]).astype(np.int64)
    f["click"] = pd.to_numeric(f["click"]).astype(float)
    req = pd.factorize(f["request_id"].astype(str))[0]
    f["req"] = req
    n_req = int(req.max()) + 1 if len(req) else 0
    if n_req < min_requests:
        return None
    K = np.bincount(req, minlength=n_req).astype(float)                         # [R] slots shuffled
    # the target's slot of each stream within its request: rank by score (ties: the shown order)
    f = f.sort_values(["req", "score", "position"], ascending=[True, False, True], kind="stable")
    f["target"] = f.groupby("req").cumcount().to_numpy() + 1
    hit = (f["target"].to_numpy() == f["position"].to_numpy()).astype(float)
    per_req = np.bincount(f["req"].to_numpy(), weights=f["click"].to_numpy() * hit * K[f["req"].to_numpy()],
                          minlength=n_req)                                         # [R] ρ_r
    logged = np.bincount(f["req"].to_numpy(), weights=f["click"].to_numpy(), minlength=n_req)
    rng = np.random.default_rng(seed)
    boots = np.array([per_req[rng.integers(0, n_req, n_req)].mean() for _ in range(n_boot)]) if n_boot else None
    return {"estimate": float(per_req.mean()),
            "ci_low": float(np.percentile(boots, 2.5)) if boots is not None else None,
            "ci_high": float(np.percentile(boots, 97.5)) if boots is not None else None,
            "logged": float(logged.mean()), "requests": n_req, "k_mean": float(K.mean())}


__all__ = ["page_value", "randomised_requests", "MIN_REQUESTS"]

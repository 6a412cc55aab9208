"""Purchase-intent attribution: a purchase's credit spread over the clicks that preceded it.

Seed 003 §4.4: a purchase of user u in stream s at t_p credits each of u's clicked impressions of
s at t_c ∈ [t_p − window, t_p] with weight η^((t_p − t_c) / 1 h), normalised so one purchase gives
one unit of credit in all (t_c: the clicked impression's time); an impression's conversion label
is its summed credit (capped at 1).
η = 1 splits a purchase evenly over its clicks; η → 0 is last touch.
"""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd


def decayed_credit(clicked: pd.DataFrame, purchases: pd.DataFrame, n: int, *, eta: float,
                   window: timedelta) -> np.ndarray:
    """Credit per impression row ``_i`` (``[n]``). ``clicked``: user_id, stream_id, ts, _i of the
    clicked impressions; ``purchases``: user_id, stream_id, ts."""
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"the decay eta must be in (0, 1], got {eta}")
    credit = np.zeros(n)
    if clicked.empty or purchases.empty:
        return credit
    p = purchases[["user_id", "stream_id", "ts"]].reset_index(drop=True)
    p["_p"] = np.arange(len(p))
    m = p.merge(clicked[["user_id", "stream_id", "ts", "_i"]].rename(columns={"ts": "t_c"}),
                on=["user_id", "stream_id"], how="inner")
    dt_h = (m["ts"] - m["t_c"]).dt.total_seconds().to_numpy() / 3600.0
    ok = (dt_h >= 0) & (dt_h <= pd.Timedelta(window).total_seconds() / 3600.0)
    m, dt_h = m[ok], dt_h[ok]
    if m.empty:
        return credit
    w = np.power(eta, dt_h)
    total = np.bincount(m["_p"].to_numpy(), weights=w, minlength=len(p))
    share = w / total[m["_p"].to_numpy()]
    np.add.at(credit, m["_i"].to_numpy(dtype=np.int64), share)
    return credit


__all__ = ["decayed_credit"]

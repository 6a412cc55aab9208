"""The position (examination) curve from a log with positions, relative to slot 1.

A position-based click model (PBM; Craswell et al., WSDM 2008): a shown stream is clicked when
its slot is examined and it is relevant, P(click | u, s, p) = θ_p · γ_{u,s}. The curve is
θ_p / θ_1. Two estimators:

- ``randomised`` (seed 003 §4.5): over the requests whose top-K order was uniformly permuted
  (impressions with ``policy == "randomised"``), every stream is equally likely at every slot, so
  the click rate at p is θ_p · E[γ] and ctr_p / ctr_1 is the curve — no relevance model.
- ``em``: without randomised traffic, the PBM fitted by expectation–maximisation on every
  impression (Wang et al., WSDM 2018, "Position bias estimation for unbiased learning to rank in
  personal search"): identified by the (user, stream) pairs shown at several slots (intervention
  harvesting); the relevance of a pair seen once is shrunk to the mean.

CIs: percentile bootstrap over requests (``n_boot`` resamples; for ``em`` the EM is refitted on
each, so keep it small).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

MIN_RANDOMISED = 200          # randomised requests needed before their estimate is used


def impressions_with_clicks(events: pd.DataFrame) -> pd.DataFrame:
    """One row per impression with a position: request_id, user_id, stream_id, position, policy,
    clicked (a click with the same request_id and stream_id)."""
    ev = events
    imp = ev[(ev["type"] == "impression") & ev["position"].notna() & ev["request_id"].notna()]
    if not len(imp):
        raise ValueError("no impressions with a position and a request_id in these events")
    clk = ev[(ev["type"] == "click") & ev["request_id"].notna() & ev["stream_id"].notna()]
    key = set(zip(clk["request_id"].astype(str), clk["stream_id"].astype("int64")))
    out = pd.DataFrame({"request_id": imp["request_id"].astype(str).to_numpy(),
                        "user_id": imp["user_id"].astype("int64").to_numpy(),
                        "stream_id": imp["stream_id"].astype("int64").to_numpy(),
                        "position": imp["position"].astype("int64").to_numpy(),
                        "policy": (imp["policy"] if "policy" in imp.columns else pd.Series([None] * len(imp)))
                        .to_numpy(dtype=object)})
    out["clicked"] = [(r, s) in key for r, s in zip(out["request_id"], out["stream_id"])]
    return out


def _ratio_curve(pos: np.ndarray, clicked: np.ndarray, P: int) -> np.ndarray:
    n = np.bincount(pos - 1, minlength=P)[:P].astype(float)
    c = np.bincount(pos - 1, weights=clicked.astype(float), minlength=P)[:P]
    ctr = np.divide(c, n, out=np.full(P, np.nan), where=n > 0)
    return ctr / ctr[0] if ctr[0] > 0 else np.full(P, np.nan)


def _em_curve(pos: np.ndarray, pair: np.ndarray, clicked: np.ndarray, P: int, iters: int = 60,
              prior: float = 1.0) -> np.ndarray:
    """θ_p / θ_1 of a PBM fitted by EM; γ per pair with ``prior`` pseudo-observations at the mean."""
    n_pair = int(pair.max()) + 1
    theta = np.full(P, 0.5)
    gamma = np.full(n_pair, max(clicked.mean(), 1e-3) / 0.5)
    gamma = np.clip(gamma, 1e-4, 1 - 1e-4)
    p0 = pos - 1
    cnt_pair = np.bincount(pair, minlength=n_pair).astype(float)
    cnt_pos = np.bincount(p0, minlength=P).astype(float)
    for _ in range(iters):
        t, g = theta[p0], gamma[pair]
        denom = np.maximum(1 - t * g, 1e-12)
        e = np.where(clicked, 1.0, t * (1 - g) / denom)                # P(examined | data)
        r = np.where(clicked, 1.0, (1 - t) * g / denom)                # P(relevant | data)
        theta = np.bincount(p0, weights=e, minlength=P) / np.maximum(cnt_pos, 1)
        g_mean = r.mean()
        gamma = (np.bincount(pair, weights=r, minlength=n_pair) + prior * g_mean) / (cnt_pair + prior)
        theta = np.clip(theta, 1e-4, 1.0)
        gamma = np.clip(gamma, 1e-4, 1 - 1e-4)
    return theta / theta[0]


def position_curve(imps: pd.DataFrame, *, method: Optional[str] = None, max_position: Optional[int] = None,
                   n_boot: int = 200, seed: int = 0) -> tuple[str, list[dict]]:
    """``(method, rows)``: rows ``{"position", "examination", "ci_low", "ci_high", "n"}`` for slots
    1..P. ``method`` None: ``randomised`` when the log has at least MIN_RANDOMISED randomised
    requests, else ``em``."""
    rnd = imps[imps["policy"] == "randomised"]
    if method is None:
        method = "randomised" if rnd["request_id"].nunique() >= MIN_RANDOMISED else "em"
    if method not in ("randomised", "em"):
        raise ValueError(f"method must be randomised or em, got {method!r}")
    data = rnd if method == "randomised" else imps
    if not len(data):
        raise ValueError("no randomised impressions in this log (policy == 'randomised'); use --method em")
    P = int(max_position or data["position"].max())
    data = data[data["position"] <= P]
    req = pd.factorize(data["request_id"])[0]
    pos = data["position"].to_numpy()
    clicked = data["clicked"].to_numpy()
    if method == "randomised":
        est = lambda rows: _ratio_curve(pos[rows], clicked[rows], P)             # noqa: E731
    else:
        pair = pd.factorize(pd.MultiIndex.from_arrays([data["user_id"], data["stream_id"]]))[0]
        est = lambda rows: _em_curve(pos[rows], pd.factorize(pair[rows])[0], clicked[rows], P)   # noqa: E731
    rows_all = np.arange(len(data))
    point = est(rows_all)
    rng = np.random.default_rng(seed)
    n_req = req.max() + 1
    by_req = np.argsort(req, kind="stable")
    starts = np.searchsorted(req[by_req], np.arange(n_req + 1))
    boots = []
    for _ in range(n_boot):                      # resample requests (their slots stay together)
        pick = rng.integers(0, n_req, n_req)
        rows = np.concatenate([by_req[starts[r]:starts[r + 1]] for r in pick])
        boots.append(est(rows))
    if boots:
        boots = np.array(boots)
        lo, hi = np.nanpercentile(boots, 2.5, axis=0), np.nanpercentile(boots, 97.5, axis=0)
    else:                                        # n_boot = 0: no interval
        lo = hi = np.full(P, np.nan)
    n = np.bincount(pos - 1, minlength=P)[:P]

    def num(v):
        return None if not np.isfinite(v) else float(v)
    return method, [{"position": p + 1, "examination": num(point[p]), "ci_low": num(lo[p]),
                     "ci_high": num(hi[p]), "n": int(n[p])} for p in range(P)]


def plot(method: str, rows: list[dict], path, truth: Optional[np.ndarray] = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = np.array([r["position"] for r in rows])
    y = np.array([np.nan if r["examination"] is None else r["examination"] for r in rows])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if all(r["ci_low"] is not None for r in rows):
        ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.25,
                        label="95% bootstrap CI")
    ax.plot(x, y, "o-", label=f"estimate ({method})")
    if truth is not None:
        ax.plot(x, truth[:len(x)], "k--", lw=1, label="truth")
    ax.set_xlabel("position")
    ax.set_ylabel("examination / slot 1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["impressions_with_clicks", "position_curve", "plot", "MIN_RANDOMISED"]

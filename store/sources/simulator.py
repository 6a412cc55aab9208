"""A built-in live-commerce world with planted ground truth (deterministic by seed).

The world
---------
* **Users** have a category taste vector (Dirichlet), an activity level (how often they open
  the live tab), a purchase propensity and a latent vector (collaborative structure).
* **Streams** (rooms) have a category, a quality (partly shared by streams of one
  streamer), a latent vector, a conversion skill, a stay-time effect and a daily schedule of
  1–3 live windows (each broadcast gets its own "heat" effect). At any moment roughly 30–50 %
  of the streams are live; the windows run ``future_hours`` past ``end`` so that streams are
  live when the API serves "now".
* **Items** have a category and a price; each stream sells 5–20 of them (mostly of its own
  category; the first ones are its core items).

The log
-------
Each request is a user opening the live tab at a random time (diurnal). The candidates are
the streams live then; a logging policy orders them: with probability ``explore_rate`` a
uniformly random slate (the *randomised* part, where the position curve is identifiable),
otherwise a noisy quality/popularity ranking (positions correlate with relevance, not
perfectly). For each shown stream::

    relevance  r = sigmoid(bias + w_taste·log(K·taste[u, cat] + 0.1) + w_quality·quality[s]
                           + w_affinity·<user_vec, stream_vec> + w_window·heat[broadcast]
                           + w_loyalty·log1p(#earlier clicks of u on s))
    P(click)     = examination(position) · r · g,   examination(p) = p ** -0.7  (planted)
    g            = page_same_below if the stream right above is of the same category, else 1
                   (a planted page-context effect for re-ranking; 1.0 = none, the default)
    P(purchase | click) = sigmoid(cvr_bias + w_cvr·logit(r) + buy_bias[u] + conv_skill[s])
    stay seconds ~ LogNormal(log(stay_base_s) + w_stay·r + stay_effect[s], stay_sigma)

A click is followed by a watch event (value = seconds), item clicks on the stream's items
(more with higher relevance; items chosen by core flag, the user's taste for the item's
category and price) and possibly a purchase (value = price, preceded by an item click).
Every follow-up carries the request_id, position and stream_id of its impression. Impressions
carry their ``policy`` (randomised / ranked) and, for the randomised slates, the exact
``propensity`` 1 / (streams live); the noisy ranking's is left null (not computed).

``truth`` has one row per impression: event_id, p_click, p_purchase (given click),
mean_stay_s, relevance, examination, page_effect (g), randomized (whether the slate was the random one).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

import numpy as np
import pandas as pd

from . import EVENT_COLUMNS, SourceData, TS_DTYPE

log = logging.getLogger(__name__)

EXAM_POWER = 0.7
US = 1_000_000          # microseconds per second
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
FOLLOWUP_MAX_S = 20 * 60           # every follow-up happens within 20 min of its request
REQUEST_MARGIN_S = 30 * 60         # requests stop 30 min before `end`, so no event is >= end


def examination(position) -> np.ndarray | float:
    """The planted examination probability of slot ``position`` (1-based): ``position**-0.7``."""
    p = np.asarray(position, dtype=float)
    if np.any(p < 1):
        raise ValueError("positions are 1-based")
    out = p ** -EXAM_POWER
    return float(out) if out.ndim == 0 else out


EXAMINATION = examination(np.arange(1, 11))     # positions 1..10 (the default slate)


@dataclass
class SimConfig:
    seed: int = 0
    n_users: int = 2000
    n_streams: int = 120
    n_items: int = 1500
    n_categories: int = 8
    days: float = 14
    end: Optional[datetime] = None          # None: now, floored to the hour (UTC)
    requests_per_day: int = 1500            # users opening the live tab
    slate_size: int = 10
    windows_per_day: tuple = (1, 3)         # broadcasts per day per stream (inclusive range)
    window_hours: tuple = (3.0, 7.0)        # broadcast duration range
    future_hours: float = 48.0              # live windows continue this long after `end`
    explore_rate: float = 0.2               # share of requests with a uniformly random slate
    policy_noise: float = 1.0               # noise of the logging ranking policy
    items_per_stream: tuple = (5, 20)
    taste_concentration: float = 0.4        # Dirichlet alpha of user tastes
    latent_dim: int = 8
    # relevance
    relevance_bias: float = -1.5
    w_taste: float = 0.8
    w_quality: float = 0.6
    w_affinity: float = 0.5
    w_window: float = 0.3
    w_loyalty: float = 0.6
    # purchase (given click)
    cvr_bias: float = -2.2
    w_cvr: float = 1.0
    # stay
    stay_base_s: float = 40.0
    w_stay: float = 2.5
    stay_sigma: float = 0.9
    # page context: a stream right below one of its own category is this much less attractive (1 = no effect)
    page_same_below: float = 1.0
    page: str = "live_tab"

    def resolved_end(self) -> datetime:
        if self.end is None:
            now = datetime.now(timezone.utc)
            return now.replace(minute=0, second=0, microsecond=0)
        end = self.end
        if end.tzinfo is None:
            end = end.replace(tzinfo=timezone.utc)
        return end.astimezone(timezone.utc)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _to_ts(us: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(us, dtype="int64").astype("datetime64[us]")).dt.tz_localize("UTC").astype(TS_DTYPE)


def _gumbel_pick(rng, logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise sample of a column index with P ∝ exp(logits) among mask==True (Gumbel-max)."""
    g = rng.gumbel(size=logits.shape)
    return np.argmax(np.where(mask, logits + g, -np.inf), axis=1)


def simulate(cfg: Optional[SimConfig] = None) -> SourceData:
    """Generate the world and its event log (see module docstring)."""
    cfg = cfg or SimConfig()
    t_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    U, S, I, K, L = cfg.n_users, cfg.n_streams, cfg.n_items, cfg.n_categories, cfg.slate_size
    if min(U, S, I, K, L) < 1:
        raise ValueError("n_users, n_streams, n_items, n_categories and slate_size must be >= 1")
    if not cfg.page_same_below > 0:
        raise ValueError(f"page_same_below must be > 0, got {cfg.page_same_below}")
    end_dt = cfg.resolved_end()
    end_us = int(pd.Timestamp(end_dt).value // 1000)
    start_us = end_us - int(round(cfg.days * DAY_US))
    horizon_us = end_us + int(round(cfg.future_hours * HOUR_US))
    # the world's end time is part of every id: a world simulated later (a new `make run` days
    # after the last one) adds new events instead of colliding with the old ones as duplicates
    tag = f"sim{cfg.seed}-{pd.Timestamp(end_dt).strftime('%Y%m%d%H%M')}"

    # ------------------------------------------------------------------ users
    taste = rng.dirichlet(np.full(K, cfg.taste_concentration), size=U)
    taste_term = np.log(K * taste + 0.1)                           # U x K, in [-2.3, 2.1]
    activity = rng.lognormal(0.0, 0.8, size=U)
    buy_bias = rng.normal(0.0, 0.6, size=U)
    user_vec = rng.normal(size=(U, cfg.latent_dim))

    # ------------------------------------------------------------------ streams
    n_streamers = max(1, int(round(0.8 * S)))
    streamer_of = rng.integers(0, n_streamers, size=S)
    streamer_q = rng.normal(0.0, 0.8, size=n_streamers)
    quality = streamer_q[streamer_of] + rng.normal(0.0, 0.6, size=S)
    stream_cat = rng.integers(0, K, size=S)
    stream_vec = rng.normal(size=(S, cfg.latent_dim))
    conv_skill = rng.normal(0.0, 0.5, size=S)
    stay_effect = rng.normal(0.0, 0.3, size=S)
    created_us = start_us - (rng.uniform(1.0, 365.0, size=S) * DAY_US).astype(np.int64)

    # ------------------------------------------------------------------ items
    item_cat = rng.integers(0, K, size=I)
    price = np.round(np.exp(rng.normal(3.2, 0.7, size=I)), 2)
    log_price = np.log(price)
    lo, hi = cfg.items_per_stream
    n_sell = rng.integers(lo, hi + 1, size=S)
    n_sell = np.minimum(n_sell, I)
    max_sell = int(n_sell.max())
    si_items = np.full((S, max_sell), -1, dtype=np.int64)        # item index, -1 = pad
    si_core = np.zeros((S, max_sell), dtype=bool)
    by_cat = [np.flatnonzero(item_cat == k) for k in range(K)]
    for s in range(S):
        n = int(n_sell[s])
        pool = by_cat[stream_cat[s]]
        n_in = min(int(rng.binomial(n, 0.75)), len(pool))
        own = rng.choice(pool, size=n_in, replace=False) if n_in else np.empty(0, np.int64)
        rest = np.setdiff1d(np.arange(I), own, assume_unique=False)
        other = rng.choice(rest, size=n - n_in, replace=False) if n > n_in else np.empty(0, np.int64)
        chosen = np.concatenate([own, other]).astype(np.int64)
        si_items[s, :n] = chosen
        si_core[s, :max(1, n // 5)] = True

    # ------------------------------------------------------------------ live windows
    day0 = (start_us // DAY_US - 1) * DAY_US
    n_days = int((horizon_us - day0) // DAY_US) + 2
    k_lo, k_hi = cfg.windows_per_day
    h_lo, h_hi = cfg.window_hours
    w_stream, w_start, w_end = [], [], []
    for s in range(S):
        k = int(rng.integers(k_lo, k_hi + 1))
        seg_us = DAY_US // k
        phase = int(rng.integers(0, seg_us // US)) * US            # windows may cross midnight
        for j in range(k):
            dur_h = min(rng.uniform(h_lo, h_hi), 0.9 * seg_us / HOUR_US)
            base_off_h = rng.uniform(0.0, seg_us / HOUR_US - dur_h)
            dur = np.minimum(dur_h * np.exp(rng.normal(0.0, 0.1, size=n_days)), 0.95 * seg_us / HOUR_US)
            off = np.clip(base_off_h + rng.normal(0.0, 0.3, size=n_days), 0.0, seg_us / HOUR_US - dur)
            st = day0 + phase + np.arange(n_days) * DAY_US + j * seg_us + np.round(off * 3600).astype(np.int64) * US
            en = st + np.round(dur * 3600).astype(np.int64) * US
            w_stream.append(np.full(n_days, s))
            w_start.append(st)
            w_end.append(en)
    w_stream = np.concatenate(w_stream)
    w_start = np.concatenate(w_start)
    w_end = np.concatenate(w_end)
    keep = (w_end > start_us) & (w_start < horizon_us)
    order = np.lexsort((w_start[keep], w_stream[keep]))
    w_stream, w_start, w_end = w_stream[keep][order], w_start[keep][order], w_end[keep][order]
    heat = rng.normal(0.0, 1.0, size=len(w_stream))
    w_bounds = np.searchsorted(w_stream, np.arange(S + 1))          # windows of s: [b[s], b[s+1])

    # ------------------------------------------------------------------ requests
    R = int(round(cfg.requests_per_day * cfg.days))
    last_us = end_us - REQUEST_MARGIN_S * US
    if last_us <= start_us:
        raise ValueError("days is too short: the world needs more than 30 minutes")
    n_hours = int(math.ceil((last_us - start_us) / HOUR_US))
    hour_starts = start_us + np.arange(n_hours, dtype=np.int64) * HOUR_US
    hod = (hour_starts // HOUR_US) % 24
    diurnal = 1.0 + 0.7 * np.sin(2 * np.pi * (hod - 14) / 24.0)    # evening peak
    hb = rng.choice(n_hours, size=R, p=diurnal / diurnal.sum())
    req_ts = hour_starts[hb] + rng.integers(0, HOUR_US, size=R)
    req_ts = np.minimum(req_ts, last_us - 1)
    req_user = rng.choice(U, size=R, p=activity / activity.sum())
    req_random = rng.random(size=R) < cfg.explore_rate
    order = np.argsort(req_ts, kind="stable")
    req_ts, req_user, req_random = req_ts[order], req_user[order], req_random[order]

    # ------------------------------------------------------------------ slates + clicks
    exam = examination(np.arange(1, L + 1))
    watch_count = np.zeros((U, S), dtype=np.int32)                  # loyalty state
    slate_stream = np.full((R, L), -1, dtype=np.int64)
    slate_rel = np.zeros((R, L))
    slate_click = np.zeros((R, L), dtype=bool)
    slate_logit = np.zeros((R, L))
    slate_g = np.ones((R, L))
    click_u = rng.random(size=(R, L))
    req_live = np.zeros(R, dtype=np.int64)                          # streams live at each request
    CH = 4096
    for c0 in range(0, R, CH):
        c1 = min(R, c0 + CH)
        t = req_ts[c0:c1]
        n = c1 - c0
        wid = np.full((n, S), -1, dtype=np.int64)
        for s in range(S):
            b0, b1 = w_bounds[s], w_bounds[s + 1]
            if b1 == b0:
                continue
            idx = np.searchsorted(w_start[b0:b1], t, side="right") - 1
            ok = idx >= 0
            ok[ok] = t[ok] < w_end[b0:b1][idx[ok]]
            wid[ok, s] = b0 + idx[ok]
        live = wid >= 0
        req_live[c0:c1] = live.sum(axis=1)
        u = req_user[c0:c1]
        noise = rng.normal(size=(n, S))
        ranked = quality[None, :] + 0.3 * taste_term[u][:, stream_cat] + cfg.policy_noise * noise
        score = np.where(req_random[c0:c1, None], noise, ranked)
        score = np.where(live, score, -np.inf)
        if S > L:
            top = np.argpartition(-score, L - 1, axis=1)[:, :L]
        else:
            top = np.tile(np.arange(S), (n, 1))
        top_score = np.take_along_axis(score, top, axis=1)
        o = np.argsort(-top_score, axis=1, kind="stable")
        top = np.take_along_axis(top, o, axis=1)
        valid = np.isfinite(np.take_along_axis(top_score, o, axis=1))
        if top.shape[1] < L:                                        # fewer streams than slots
            pad = L - top.shape[1]
            top = np.pad(top, ((0, 0), (0, pad)), constant_values=0)
            valid = np.pad(valid, ((0, 0), (0, pad)), constant_values=False)
        top_wid = np.take_along_axis(wid, top, axis=1)
        pre = (cfg.relevance_bias
               + cfg.w_taste * taste_term[u[:, None], stream_cat[top]]
               + cfg.w_quality * quality[top]
               + cfg.w_affinity * np.einsum("nd,nld->nl", user_vec[u], stream_vec[top]) / math.sqrt(cfg.latent_dim)
               + cfg.w_window * heat[np.maximum(top_wid, 0)])
        n_valid = valid.sum(axis=1)
        for i in range(n):
            m = n_valid[i]
            if m == 0:
                continue
            r_i = c0 + i
            ui = u[i]
            sel = top[i, :m]
            logit = pre[i, :m] + cfg.w_loyalty * np.log1p(watch_count[ui, sel])
            rel = 1.0 / (1.0 + np.exp(-logit))
            g = np.ones(m)
            if cfg.page_same_below != 1.0 and m > 1:
                g[1:] = np.where(stream_cat[sel[1:]] == stream_cat[sel[:-1]], cfg.page_same_below, 1.0)
            clk = click_u[r_i, :m] < exam[:m] * rel * g
            if clk.any():
                watch_count[ui, sel[clk]] += 1
            slate_stream[r_i, :m] = sel
            slate_rel[r_i, :m] = rel
            slate_logit[r_i, :m] = logit
            slate_click[r_i, :m] = clk
            slate_g[r_i, :m] = g

    # ------------------------------------------------------------------ impressions
    shown = slate_stream >= 0
    imp_req, imp_slot = np.nonzero(shown)                           # row-major: by request, then slot
    imp_pos = imp_slot + 1
    imp_stream = slate_stream[imp_req, imp_slot]
    imp_user = req_user[imp_req]
    imp_ts = req_ts[imp_req]
    imp_rel = slate_rel[imp_req, imp_slot]
    imp_logit = slate_logit[imp_req, imp_slot]
    imp_exam = exam[imp_slot]
    imp_click = slate_click[imp_req, imp_slot]
    p_purchase = _sigmoid(cfg.cvr_bias + cfg.w_cvr * imp_logit + buy_bias[imp_user] + conv_skill[imp_stream])
    stay_mu = np.log(cfg.stay_base_s) + cfg.w_stay * imp_rel + stay_effect[imp_stream]
    mean_stay = np.exp(stay_mu + 0.5 * cfg.stay_sigma ** 2)

    rid = np.array([f"{tag}-{r}" for r in range(R)], dtype=object)
    imp_rid = rid[imp_req]
    imp_key = np.array([f"{a}-{p}" for a, p in zip(imp_rid, imp_pos)], dtype=object)

    blocks = []

    def block(event_id, user, ts, typ, stream, item, request, pos, page, value, propensity=None, policy=None):
        n = len(event_id)
        blocks.append(pd.DataFrame({
            "propensity": propensity if propensity is not None else np.full(n, np.nan),
            "policy": policy if policy is not None else np.full(n, None, dtype=object),
            "event_id": event_id, "user_id": user.astype(np.int64) + 1, "ts_us": ts.astype(np.int64),
            "type": np.full(n, typ, dtype=object),
            "stream_id": stream.astype(np.int64) + 1,
            "item_id": (item.astype(np.int64) + 1) if item is not None else np.full(n, -1, np.int64),
            "request_id": request, "position": pos.astype(np.int64),
            "page": np.full(n, page, dtype=object),
            "value": value if value is not None else np.full(n, np.nan)}))

    # the logging policy's propensity: a randomised slate is a uniformly random ordered sample of the
    # live streams (P(stream at slot) = 1 / live); the ranked one adds Gaussian noise to its scores
    # and its propensity is not computed (null)
    imp_random = req_random[imp_req]
    imp_prop = np.where(imp_random, 1.0 / np.maximum(req_live[imp_req], 1), np.nan)
    imp_policy = np.where(imp_random, "randomised", "ranked").astype(object)
    block(imp_key + "-imp", imp_user, imp_ts, "impression", imp_stream, None, imp_rid, imp_pos, cfg.page, None,
          imp_prop, imp_policy)

    # ------------------------------------------------------------------ follow-ups of clicks
    c = np.flatnonzero(imp_click)
    cu, cs, ck, crid, cpos = imp_user[c], imp_stream[c], imp_key[c], imp_rid[c], imp_pos[c]
    crel = imp_rel[c]
    click_ts = imp_ts[c] + (rng.uniform(1.0, 30.0, size=len(c)) * US).astype(np.int64)
    stay = np.round(np.exp(stay_mu[c] + cfg.stay_sigma * rng.normal(size=len(c))), 1)
    block(ck + "-clk", cu, click_ts, "click", cs, None, crid, cpos, cfg.page, None)
    block(ck + "-watch", cu, click_ts + US, "watch", cs, None, crid, cpos, None, stay)

    # item preference inside the clicked stream: core items, the user's taste, cheaper items
    it = si_items[cs]                                               # n_clicks x max_sell
    it_mask = it >= 0
    it_safe = np.maximum(it, 0)
    it_logit = (1.0 * si_core[cs] + 0.7 * taste_term[cu[:, None], item_cat[it_safe]]
                - 0.3 * log_price[it_safe])
    window_s = np.clip(stay, 10.0, FOLLOWUP_MAX_S - 120.0)          # browsing happens while watching
    n_ic = rng.binomial(3, np.clip(0.1 + 0.4 * crel, 0.0, 1.0))
    for k in range(3):
        rows = np.flatnonzero(n_ic > k)
        if len(rows) == 0:
            continue
        pick = _gumbel_pick(rng, it_logit[rows], it_mask[rows])
        item = it[rows, pick]
        ts = click_ts[rows] + (rng.uniform(0.05, 1.0, size=len(rows)) * window_s[rows] * US).astype(np.int64)
        block(ck[rows] + f"-ic{k}", cu[rows], ts, "item_click", cs[rows], item, crid[rows], cpos[rows], None, None)

    bought = np.flatnonzero(rng.random(size=len(c)) < p_purchase[c])
    if len(bought):
        pick = _gumbel_pick(rng, it_logit[bought] - 0.3 * log_price[it_safe[bought]], it_mask[bought])
        item = it[bought, pick]
        ic_ts = click_ts[bought] + (rng.uniform(0.1, 1.0, size=len(bought)) * window_s[bought] * US).astype(np.int64)
        buy_ts = ic_ts + (rng.uniform(5.0, 100.0, size=len(bought)) * US).astype(np.int64)
        block(ck[bought] + "-icb", cu[bought], ic_ts, "item_click", cs[bought], item, crid[bought], cpos[bought],
              None, None)
        block(ck[bought] + "-buy", cu[bought], buy_ts, "purchase", cs[bought], item, crid[bought], cpos[bought],
              None, price[item])

    ev = pd.concat(blocks, ignore_index=True)
    ev = ev.sort_values("ts_us", kind="stable").reset_index(drop=True)
    events = pd.DataFrame({
        "event_id": ev["event_id"].astype(object),
        "user_id": ev["user_id"].astype("int64"),
        "ts": _to_ts(ev["ts_us"].to_numpy()),
        "type": ev["type"].astype(object),
        "stream_id": ev["stream_id"].astype("Int64"),
        "item_id": ev["item_id"].astype("Int64").mask(ev["item_id"] < 0),
        "request_id": ev["request_id"].astype(object),
        "position": ev["position"].astype("Int64"),
        "page": ev["page"].astype(object),
        "value": ev["value"].astype(float),
        "propensity": ev["propensity"].astype(float),
        "policy": ev["policy"].astype(object),
    })[EVENT_COLUMNS]

    # ------------------------------------------------------------------ catalog + truth
    users = pd.DataFrame({"user_id": np.arange(1, U + 1, dtype=np.int64), "attributes": [None] * U})
    items = pd.DataFrame({"item_id": np.arange(1, I + 1, dtype=np.int64), "category": item_cat.astype(np.int64),
                          "price": price.astype(float)})
    streams = pd.DataFrame({"stream_id": np.arange(1, S + 1, dtype=np.int64),
                            "streamer_id": (100_000 + streamer_of).astype(np.int64),
                            "category": stream_cat.astype(np.int64),
                            "created_at": _to_ts(created_us)})
    si_s, si_j = np.nonzero(si_items >= 0)
    stream_items = pd.DataFrame({"stream_id": (si_s + 1).astype(np.int64),
                                 "item_id": (si_items[si_s, si_j] + 1).astype(np.int64),
                                 "is_core": si_core[si_s, si_j]})
    live_windows = pd.DataFrame({"stream_id": (w_stream + 1).astype(np.int64),
                                 "start_ts": _to_ts(w_start), "end_ts": _to_ts(w_end)})
    truth = pd.DataFrame({
        "event_id": (imp_key + "-imp").astype(object),
        "p_click": imp_exam * imp_rel * slate_g[imp_req, imp_slot],
        "p_purchase": p_purchase,
        "mean_stay_s": mean_stay,
        "relevance": imp_rel,
        "examination": imp_exam,
        "page_effect": slate_g[imp_req, imp_slot],
        "randomized": req_random[imp_req],
    })
    data = SourceData(name="simulator", users=users, items=items, streams=streams, stream_items=stream_items,
                      live_windows=live_windows, events=events, truth=truth,
                      meta={"config": cfg, "start": pd.Timestamp(start_us * 1000, tz="UTC").to_pydatetime(),
                            "end": end_dt, "requests": R})
    log.info("simulated %d requests, %d events in %.2fs", R, len(events), time.perf_counter() - t_start)
    return data


__all__ = ["SimConfig", "simulate", "examination", "EXAMINATION", "EXAM_POWER"]

"""Training samples: impressions with their labels, joined point-in-time with Feast features.

Labels of an impression (user u shown stream s at ts):
- click: when the impression has a request_id, a ``click`` event with the same (request_id,
  stream_id). Without a request_id (bulk logs, Twitch), a ``click`` or ``watch`` by u on s at most
  CLICK_WINDOW (30 min) after the impression, credited to the LAST such impression before it
  (last touch: a stream shown every 10 minutes is not clicked three times by one watch).
- purchase / stay_s: purchases (count > 0) and watch seconds in stream s within ATTRIBUTION (24 h)
  after the impression. An event carrying a request_id goes to the impression of that
  (request_id, stream_id) (if shown at most 24 h before); one without goes, last touch, to u's
  latest CLICKED impression of s in the 24 h before it (a purchase after an impression the user did
  not click was not caused by it: purchase and stay stay inside the click space, as ESMM assumes).
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CLICK_WINDOW = timedelta(minutes=30)
ATTRIBUTION = timedelta(hours=24)
CHUNK_ROWS = 100_000          # entity rows per get_historical_features call
LABEL_COLUMNS = ["event_id", "request_id", "user_id", "stream_id", "category", "ts", "position", "page",
                 "policy", "click", "purchase", "stay_s"]


def _utc_us(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")


def _has(s: pd.Series) -> pd.Series:
    return s.notna() & (s.astype(str) != "")


def _last_touch(actions: pd.DataFrame, imps: pd.DataFrame, window: timedelta) -> pd.Series:
    """For each action (user_id, stream_id, ts): the ``_i`` of the latest impression of the same
    (user, stream) at or before it, within ``window`` (NaN when none)."""
    if actions.empty or imps.empty:
        return pd.Series(np.nan, index=actions.index)
    a = actions[["user_id", "stream_id", "ts"]].copy()
    a["_a"] = np.arange(len(a))
    a = a.sort_values("ts", kind="stable")
    b = imps[["user_id", "stream_id", "ts", "_i"]].sort_values("ts", kind="stable")
    m = pd.merge_asof(a, b, on="ts", by=["user_id", "stream_id"], direction="backward",
                      tolerance=pd.Timedelta(window), allow_exact_matches=True)
    out = np.full(len(a), np.nan)
    out[m["_a"].to_numpy()] = m["_i"].to_numpy(dtype=float)
    return pd.Series(out, index=actions.index)


def _by_request(acts: pd.DataFrame, imps: pd.DataFrame, window: Optional[timedelta]) -> pd.Series:
    """``_i`` of the impression with the action's (request_id, stream_id) (NaN when none / too late)."""
    if acts.empty or imps.empty:
        return pd.Series(np.nan, index=acts.index)
    key = imps[_has(imps["request_id"])].drop_duplicates(["request_id", "stream_id"])
    m = acts[["request_id", "stream_id", "ts"]].reset_index().merge(
        key[["request_id", "stream_id", "ts", "_i"]].rename(columns={"ts": "imp_ts"}),
        on=["request_id", "stream_id"], how="left").set_index("index")
    i = m["_i"].astype(float)
    if window is not None:
        i[(m["ts"] - m["imp_ts"]) > pd.Timedelta(window)] = np.nan
    return i.reindex(acts.index)


def impression_labels(events: pd.DataFrame, streams: Optional[pd.DataFrame] = None, *,
                      purchase_decay: Optional[float] = None) -> pd.DataFrame:
    """One row per impression event, in time order, with click / purchase / stay_s labels.

    ``events`` in store.ingest.EVENT_COLUMNS; ``streams`` (stream_id, category) gives ``category``.
    ``purchase_decay`` η (None: the module docstring's rule, a 0/1 label): each purchase is
    credited to u's clicked impressions of s in the 24 h before it with weight η^(hours before),
    normalised, and ``purchase`` is the summed credit capped at 1 (ranking.attribution).
    """
    ev = events.copy()
    ev["ts"] = _utc_us(ev["ts"])
    ev["stream_id"] = pd.to_numeric(ev["stream_id"], errors="coerce").astype("Int64")
    imp = ev[(ev["type"] == "impression") & ev["stream_id"].notna()].copy()
    imp = imp.sort_values("ts", kind="stable").reset_index(drop=True)
    imp["stream_id"] = imp["stream_id"].astype("int64")
    imp["user_id"] = imp["user_id"].astype("int64")
    imp["_i"] = np.arange(len(imp))
    n = len(imp)
    click = np.zeros(n, dtype=np.int64)
    buys = np.zeros(n)
    stay = np.zeros(n)

    acts = ev[ev["type"].isin(["click", "watch", "purchase"]) & ev["stream_id"].notna()].copy()
    acts["stream_id"] = acts["stream_id"].astype("int64")
    acts["user_id"] = acts["user_id"].astype("int64")
    acts = acts.sort_values("ts", kind="stable")
    with_req = _has(acts["request_id"]) if "request_id" in acts else pd.Series(False, index=acts.index)

    # --- click
    imp_req = _has(imp["request_id"])
    clicks_req = acts[(acts["type"] == "click") & with_req]
    if len(clicks_req) and imp_req.any():
        pairs = pd.MultiIndex.from_frame(clicks_req[["request_id", "stream_id"]].astype({"request_id": str}))
        mine = pd.MultiIndex.from_frame(imp[["request_id", "stream_id"]].astype({"request_id": str}))
        click[(mine.isin(pairs) & imp_req.to_numpy())] = 1
    plain = acts[acts["type"].isin(["click", "watch"]) & ~with_req]
    hit = _last_touch(plain, imp[~imp_req], CLICK_WINDOW).dropna().astype(np.int64).unique()
    click[hit] = 1

    # --- purchase / stay: by request, else last touch (clicked impressions first)
    imp_clicked = imp[click == 1]
    for typ, acc in (("purchase", buys), ("watch", stay)):
        a = acts[acts["type"] == typ]
        if a.empty:
            continue
        target = pd.Series(np.nan, index=a.index)
        ar = with_req.loc[a.index]
        target[ar] = _by_request(a[ar], imp, ATTRIBUTION)
        rest = target.isna() & ~ar
        if rest.any():
            target[rest] = _last_touch(a[rest], imp_clicked, ATTRIBUTION)
        ok = target.notna()
        weights = np.ones(int(ok.sum())) if typ == "purchase" else \
            pd.to_numeric(a.loc[ok, "value"], errors="coerce").fillna(0.0).to_numpy()
        np.add.at(acc, target[ok].astype(np.int64).to_numpy(), weights)

    purchase = (buys > 0).astype(np.int64)
    if purchase_decay is not None:
        from .attribution import decayed_credit
        credit = decayed_credit(imp_clicked, acts[acts["type"] == "purchase"], n, eta=purchase_decay,
                                window=ATTRIBUTION)
        purchase = np.minimum(credit, 1.0)

    if streams is not None and len(streams):
        cmap = pd.Series(streams["category"].to_numpy(), index=streams["stream_id"].astype("int64"))
        cmap = cmap[~cmap.index.duplicated()]
        category = imp["stream_id"].map(cmap).astype("Int64")
    else:
        category = pd.Series(pd.NA, index=imp.index, dtype="Int64")
    out = pd.DataFrame({
        "event_id": imp["event_id"].astype(str),
        "request_id": imp["request_id"].where(imp_req, None),
        "user_id": imp["user_id"],
        "stream_id": imp["stream_id"],
        "category": category,
        "ts": imp["ts"],
        "position": pd.to_numeric(imp["position"], errors="coerce").astype("Int64"),
        "page": imp["page"],
        # the serving policy that chose the slot ("randomised": the request's top K shuffled, what
        # the promotion report's offline value reads; ope.page_value)
        "policy": (imp["policy"] if "policy" in imp.columns else pd.Series(None, index=imp.index)).astype(object),
        "click": click,
        "purchase": purchase,
        "stay_s": stay,
    })
    return out[LABEL_COLUMNS]


def training_frame(settings, labels: pd.DataFrame, *, progress: bool = False,
                   chunk_rows: int = CHUNK_ROWS, lists: bool = False) -> pd.DataFrame:
    """``labels`` + :data:`feature_repo.features.FEATURE_COLUMNS`, point in time.

    Features come from ``get_historical_features`` (DuckDB offline store) with the impressions as the
    entity dataframe (event_timestamp = ts, microseconds UTC), then ``derive_features``. Row order
    and count of ``labels`` are preserved.

    lists: also fetch :data:`feature_repo.features.SEQUENCE_REFS` in the same call and return
    :data:`~feature_repo.features.SEQUENCE_COLUMNS` (recent_items, recent_streams, rt_items: python
    lists of int, [] when missing) after the numeric columns, through
    :func:`feature_repo.features.expire_lists` — the serving rule (``online.assemble``), so an
    expired rt_items reads [] in both. Default False: the output of the GBDT training set.
    """
    from feature_repo.features import (FEATURE_COLUMNS, GBDT_FEATURE_REFS, SEQUENCE_COLUMNS, SEQUENCE_REFS,
                                       derive_features, expire_lists)
    from feature_repo.store import apply_definitions

    t0 = time.perf_counter()
    labels = labels.reset_index(drop=True)
    n = len(labels)
    ts = _utc_us(labels["ts"])
    entity = pd.DataFrame({
        "user_id": labels["user_id"].astype("int64").to_numpy(),
        "stream_id": labels["stream_id"].astype("int64").to_numpy(),
        "category_id": pd.to_numeric(labels["category"], errors="coerce").fillna(-1).astype("int64").to_numpy(),
        "event_timestamp": ts.to_numpy(),
        "_row": np.arange(n, dtype=np.int64),
    })
    entity["event_timestamp"] = entity["event_timestamp"].astype("datetime64[us, UTC]")
    refs = list(GBDT_FEATURE_REFS)
    if lists:
        refs += [r for r in SEQUENCE_REFS if r not in refs]
    raw_cols = [r.split(":")[1] for r in refs]
    if n == 0:
        feats = pd.DataFrame({c: pd.Series([], dtype=float) for c in raw_cols})
    else:
        store = apply_definitions(settings)
        parts = []
        # chunks bound DuckDB's memory (the point-in-time join materialises every candidate row)
        for lo in range(0, n, chunk_rows):
            part = entity.iloc[lo:lo + chunk_rows]
            got = store.get_historical_features(entity_df=part, features=refs).to_df()
            if len(got) != len(part):
                raise AssertionError(f"get_historical_features returned {len(got)} rows for {len(part)} impressions")
            parts.append(got[["_row"] + raw_cols])
            if progress and n > chunk_rows:
                print(f"  historical features: {min(lo + chunk_rows, n):,}/{n:,} rows", flush=True)
        feats = pd.concat(parts, ignore_index=True).sort_values("_row", kind="stable").reset_index(drop=True)
        if not np.array_equal(feats["_row"].to_numpy(), np.arange(n)):
            raise AssertionError("get_historical_features lost or duplicated entity rows")
        feats = feats[raw_cols]
    frame = pd.concat([labels, feats], axis=1)
    frame["event_timestamp"] = ts
    out = derive_features(frame)
    cols = list(labels.columns) + [c for c in FEATURE_COLUMNS if c not in labels.columns]
    if lists:
        out = expire_lists(out)
        cols += [c for c in SEQUENCE_COLUMNS if c not in cols]
    out = out[cols]
    assert len(out) == n
    msg = (f"training_frame: {n:,} impressions x {len(FEATURE_COLUMNS)} features"
           f"{' + ' + str(len(SEQUENCE_COLUMNS)) + ' lists' if lists else ''} in {time.perf_counter() - t0:.2f}s")
    log.info(msg)
    if progress:
        print(msg, flush=True)
    return out

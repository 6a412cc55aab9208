"""Open Bandit Dataset logs (ZOZOTOWN; ``{policy}/{campaign}/all.csv`` + ``item_context.csv``).

* OBD items become streams (``stream_id = streamer_id = item_id``); the category is the dense
  code of ``item_feature_1`` (the first hashed item feature; ``item_feature_0`` is numeric)
  among its sorted distinct values — small, stable ints;
* users: the four hashed ``user_feature_*`` columns identify a user profile; its id is a
  stable hash (sha1 → int mod 2**62);
* each row → one ``impression`` (position 1–3, ``request_id = "obd-{policy}-{campaign}-{row}"``,
  ts = the row's timestamp) and, when ``click == 1``, a ``click`` 1 ms later with the same
  request_id and position. The policy/campaign tag (from the folder names) keeps the
  ``random`` and ``bts`` logs apart when both are ingested;
* one live window per stream covering the whole log.

Each impression carries the logging policy's ``propensity`` (``propensity_score``) and its
``policy`` (the folder's policy name); ``meta["propensity"]`` keeps them as a table too (event_id,
position, propensity_score) for off-policy estimators.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd

from . import EVENT_COLUMNS, SourceData, TS_DTYPE, normalize_catalog, to_utc_us

USER_FEATURES = ["user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3"]
REQUIRED = ["timestamp", "item_id", "position", "click"] + USER_FEATURES


def user_key(*features) -> int:
    """Stable int64 id of a user profile (sha1 of its hashed features, mod 2**62)."""
    h = hashlib.sha1("|".join(str(f) for f in features).encode()).digest()
    return int.from_bytes(h[:8], "big") % (2 ** 62)


def _tag(folder: Path) -> str:
    parts = [p for p in (folder.parent.name, folder.name) if p]
    tag = "-".join(parts) or "log"
    return re.sub(r"[^A-Za-z0-9_]+", "-", tag)[:24]


def load_obd(path: Union[str, Path]) -> SourceData:
    """Load an OBD folder holding ``all.csv`` (or another single ``*.csv`` log) and ``item_context.csv``."""
    folder = Path(path)
    if folder.is_file():
        log_file, folder = folder, folder.parent
    else:
        log_file = folder / "all.csv"
        if not log_file.exists():
            cands = [p for p in folder.glob("*.csv") if p.name != "item_context.csv"]
            if len(cands) != 1:
                raise FileNotFoundError(f"{folder}: expected all.csv (or one log .csv) and item_context.csv")
            log_file = cands[0]
    ctx_file = folder / "item_context.csv"
    cols = pd.read_csv(log_file, nrows=0).columns
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise ValueError(f"{log_file}: missing column(s) {', '.join(missing)}")
    usecols = [c for c in cols if c in REQUIRED or c == "propensity_score" or c.startswith("Unnamed")]
    df = pd.read_csv(log_file, usecols=usecols)
    row = df[cols[0]].to_numpy() if cols[0].startswith("Unnamed") else np.arange(len(df))
    tag = _tag(folder)

    # users
    feats = df[USER_FEATURES].astype(str)
    combo = feats.agg("|".join, axis=1)
    uniq = combo.unique()
    ids = {c: user_key(*c.split("|")) for c in uniq}
    user_id = combo.map(ids).to_numpy(dtype=np.int64)

    # streams (OBD items)
    item_ids = np.sort(df["item_id"].astype("int64").unique())
    category = pd.Series(0, index=item_ids, dtype="int64")
    if ctx_file.exists():
        ctx = pd.read_csv(ctx_file)
        feat = "item_feature_1" if "item_feature_1" in ctx.columns else \
            next((c for c in ctx.columns if c.startswith("item_feature")), None)
        if feat is not None:
            codes = {v: i for i, v in enumerate(sorted(ctx[feat].astype(str).unique()))}
            cat = ctx.set_index(ctx["item_id"].astype("int64"))[feat].astype(str).map(codes)
            category = cat.reindex(item_ids).fillna(0).astype("int64")
            extra = np.setdiff1d(ctx["item_id"].astype("int64").unique(), item_ids)
            if len(extra):                                           # catalog items never logged
                item_ids = np.sort(np.concatenate([item_ids, extra]))
                category = cat.reindex(item_ids).fillna(0).astype("int64")
    ts = to_utc_us(df["timestamp"])
    t_lo, t_hi = ts.min(), ts.max() + pd.Timedelta(seconds=1)
    streams = normalize_catalog("streams", pd.DataFrame({
        "stream_id": item_ids, "streamer_id": item_ids, "category": category.to_numpy(), "created_at": t_lo}))
    live_windows = normalize_catalog("live_windows", pd.DataFrame({
        "stream_id": item_ids, "start_ts": t_lo, "end_ts": t_hi}))
    users = normalize_catalog("users", pd.DataFrame({"user_id": np.unique(user_id)}))

    # events
    n = len(df)
    rid = np.array([f"obd-{tag}-{r}" for r in row], dtype=object)
    stream = df["item_id"].astype("int64").to_numpy()
    pos = df["position"].astype("int64").to_numpy()
    imp = pd.DataFrame({
        "event_id": rid + "-imp", "user_id": user_id, "ts": ts, "type": "impression",
        "stream_id": pd.array(stream, dtype="Int64"), "item_id": pd.array([pd.NA] * n, dtype="Int64"),
        "request_id": rid, "position": pd.array(pos, dtype="Int64"), "page": [None] * n,
        "value": np.full(n, np.nan),
        "propensity": (df["propensity_score"].astype(float).to_numpy() if "propensity_score" in df.columns
                       else np.full(n, np.nan)),
        "policy": [tag.split("-")[0]] * n})
    clicked = df["click"].astype(int).to_numpy() == 1
    clk = imp[clicked].copy()
    clk["event_id"] = rid[clicked] + "-click"
    clk["type"] = "click"
    clk["propensity"] = np.nan                # (an impression's field)
    clk["policy"] = None
    clk["ts"] = (clk["ts"] + pd.Timedelta(milliseconds=1)).astype(TS_DTYPE)
    events = (pd.concat([imp, clk], ignore_index=True).sort_values("ts", kind="stable")
              .reset_index(drop=True)[EVENT_COLUMNS])
    meta = {"tag": tag, "log_file": str(log_file)}
    if "propensity_score" in df.columns:
        meta["propensity"] = pd.DataFrame({"event_id": rid + "-imp", "position": pos,
                                           "propensity_score": df["propensity_score"].astype(float).to_numpy()})
    empty_items = normalize_catalog("items", pd.DataFrame({"item_id": []}))
    empty_si = normalize_catalog("stream_items", pd.DataFrame({"stream_id": [], "item_id": []}))
    return SourceData(name=f"obd-{tag}", users=users, items=empty_items, streams=streams, stream_items=empty_si,
                      live_windows=live_windows, events=events, truth=None, meta=meta)


__all__ = ["load_obd", "user_key"]

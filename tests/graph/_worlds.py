"""Small graphs for the graph tests (no files needed)."""
from __future__ import annotations

import numpy as np
import pandas as pd

BASE = pd.Timestamp("2024-01-01", tz="UTC")


def planted_world(n_comm: int = 4, users_per: int = 40, streams_per: int = 8, watches: int = 12,
                  p_in: float = 0.9, seed: int = 0, big_ids: bool = True):
    """Users and streams in ``n_comm`` planted communities: a user watches streams of its own
    community with probability ``p_in``; stream category = community. Ids are large and
    non-contiguous (offset, stride) so that the id maps are exercised. Returns (events, catalog)."""
    rng = np.random.default_rng(seed)
    n_u, n_s = n_comm * users_per, n_comm * streams_per
    uid = (10**12 + 7 * np.arange(n_u)) if big_ids else np.arange(n_u)
    sid = (5 * 10**9 + 13 * np.arange(n_s)) if big_ids else np.arange(n_s)
    ucomm = np.arange(n_u) % n_comm
    scomm = np.arange(n_s) % n_comm
    rows = []
    for u in range(n_u):
        own = np.flatnonzero(scomm == ucomm[u])
        for _ in range(watches):
            s = rng.choice(own) if rng.random() < p_in else rng.integers(n_s)
            rows.append((uid[u], sid[s], BASE + pd.Timedelta(minutes=int(rng.integers(0, 10_000)))))
    ev = pd.DataFrame(rows, columns=["user_id", "stream_id", "ts"])
    ev["type"] = "watch"
    ev["item_id"] = pd.array([pd.NA] * len(ev), dtype="Int64")
    ev["stream_id"] = ev["stream_id"].astype("Int64")
    ev = ev.sort_values("ts", kind="stable").reset_index(drop=True)
    catalog = {"users": pd.DataFrame({"user_id": uid}),
               "streams": pd.DataFrame({"stream_id": sid, "category": 100 + scomm})}
    return ev, catalog, {"user_comm": dict(zip(uid, ucomm)), "stream_comm": dict(zip(sid, scomm))}

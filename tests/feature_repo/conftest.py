"""Shared helpers of the feature_repo tests: small random event logs in EVENT_COLUMNS.

Test modules import them as ``feature_repo_testdata`` (registered below): several test folders
have a conftest.py, so ``import conftest`` would depend on collection order.
"""
import sys
import types
from datetime import datetime, timezone

import numpy as np
import pandas as pd

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def random_events(seed=0, n=600, n_users=6, n_streams=5, n_items=8, span_s=12 * 86_400, start=T0) -> pd.DataFrame:
    """A random event log (EVENT_COLUMNS, ts us UTC) with every event type."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["impression", "click", "watch", "item_click", "purchase"], size=n,
                       p=[0.45, 0.2, 0.15, 0.1, 0.1])
    offs = np.sort(rng.integers(0, span_s * 1_000_000, size=n))
    ts = pd.Series(pd.Timestamp(start).as_unit("us") + pd.to_timedelta(offs, unit="us")).astype("datetime64[us, UTC]")
    stream = pd.array(rng.integers(1, n_streams + 1, size=n), dtype="Int64")
    item = pd.array(rng.integers(100, 100 + n_items, size=n), dtype="Int64")
    no_stream = (np.isin(kinds, ["item_click", "purchase"])) & (rng.random(n) < 0.3)
    stream[no_stream] = pd.NA
    item[~np.isin(kinds, ["item_click", "purchase"])] = pd.NA
    value = np.where(kinds == "watch", rng.integers(1, 600, size=n).astype(float),
                     np.where(kinds == "purchase", np.round(rng.random(n) * 100, 2), np.nan))
    return pd.DataFrame({
        "event_id": [f"e{seed}-{i}" for i in range(n)],
        "user_id": rng.integers(1, n_users + 1, size=n).astype("int64"),
        "ts": ts,
        "type": kinds,
        "stream_id": stream,
        "item_id": item,
        "request_id": pd.Series([None] * n, dtype=object),
        "position": pd.array([pd.NA] * n, dtype="Int64"),
        "page": pd.Series([None] * n, dtype=object),
        "value": value,
    })


def catalog(n_streams=5, n_items=8, n_categories=3):
    streams = pd.DataFrame({"stream_id": np.arange(1, n_streams + 1, dtype="int64"),
                            "category": (np.arange(1, n_streams + 1) % n_categories).astype("int64")})
    items = pd.DataFrame({"item_id": np.arange(100, 100 + n_items, dtype="int64"),
                          "category": (np.arange(n_items) % n_categories).astype("int64")})
    return streams, items


def redis_base_url() -> str:
    """The test Redis server (STREAMRANK_TEST_REDIS, default 127.0.0.1:6379) without a db suffix;
    skips the test when none answers, except under CI=true where it must (.ci/run starts one)."""
    import os
    import socket

    import pytest
    url = os.environ.get("STREAMRANK_TEST_REDIS", "redis://127.0.0.1:6379")
    host, port = url.split("//", 1)[1].split("/")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return url.rstrip("/")
    except OSError:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"Redis is required in CI and is not reachable at {url}")
        pytest.skip(f"no Redis server at {url} (start one: redis-server --port 6379 --bind 127.0.0.1)")


_helpers = types.ModuleType("feature_repo_testdata")
_helpers.__dict__.update(T0=T0, random_events=random_events, catalog=catalog, redis_base_url=redis_base_url)
sys.modules["feature_repo_testdata"] = _helpers

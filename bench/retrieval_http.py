"""``/v1/recommend`` end to end over HTTP with N live streams (default 100,000): retrieval + ranking.

    python bench/retrieval_http.py [--n 100000] [--requests 300] [--clients 4] [--duration 20] [--home DIR]

Builds (or reuses, with ``--home``) the simulated world of bench/recommend.py — its pipeline trains
the V1 GBDT, Metapath2vec and the transformer ranker for real — then adds N catalog streams live
now (categories 1..1000, no events: the snapshot holds their empty Feast rows) and registers a
two-tower over the whole catalog with the product's shapes (d = 64, 20-token user tower) and
random weights, the category embeddings scaled as bench/retrieval.py does (latency does not
depend on what the weights learned; the retrieval quality figures are docs/retrieval.md's).
Then ``streamrank serve``'s shape (gunicorn, 2 workers x 4 threads) and, once every worker's live
index holds the N + simulated live streams:

- ``retrieval``: requests without candidates (the server retrieves <= 200 from the live index and
  the repeat / popular channels, then ranks them), one closed-loop client, p50 / p99 and the
  Server-Timing phases;
- ``given 200``: the same users with 200 explicit live candidates (no retrieval: the ranking cost
  alone, the baseline measured in the same run);
- ``retrieval, C clients``: --clients closed-loop clients for --duration seconds (req/s, p99).

Prints one JSON line per measurement and the issue's bar (p99 <= 20 ms, one client) beside it;
nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from argparse import Namespace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from recommend import bench_home, build_world, load, pct, run_pipeline, serve_gunicorn  # noqa: E402


def add_live_streams(settings, n: int, seed: int) -> int:
    """``n`` new catalog streams, live from an hour ago for six hours; returns how many were added
    (0 when the world already has them: a reused --home)."""
    from sqlalchemy import func, insert, select

    from store.db import get_engine
    from store.schema import LiveWindow, Stream
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    eng = get_engine(settings.database_url)
    with eng.begin() as conn:
        top = int(conn.execute(select(func.max(Stream.stream_id))).scalar() or 0)
        live = conn.execute(select(func.count(func.distinct(LiveWindow.stream_id))).where(
            LiveWindow.start_ts <= now, LiveWindow.end_ts > now)).scalar()
        if live >= n:
            return 0
        ids = np.arange(top + 1, top + 1 + n)
        cats = rng.integers(1, 1001, n)
        for i in range(0, n, 5000):
            conn.execute(insert(Stream), [{"stream_id": int(s), "streamer_id": int(s), "category": int(c),
                                           "created_at": now - timedelta(days=1)}
                                          for s, c in zip(ids[i:i + 5000], cats[i:i + 5000])])
            conn.execute(insert(LiveWindow), [{"stream_id": int(s), "start_ts": now - timedelta(hours=1),
                                               "end_ts": now + timedelta(hours=6)} for s in ids[i:i + 5000]])
    return n


def register_two_tower(settings, seed: int) -> str:
    """A two-tower over every catalog stream, random weights, registered and promoted."""
    import torch
    from sqlalchemy import select

    from retrieval.artifact import save
    from retrieval.data import Vocab
    from retrieval.model import TwoTowerConfig, build
    from store.db import get_engine
    from store.registry import promote, register_model
    from store.schema import Stream
    with get_engine(settings.database_url).connect() as conn:
        rows = conn.execute(select(Stream.stream_id, Stream.category)).all()
    ids = np.array([r[0] for r in rows], np.int64)
    vocab = Vocab(ids)
    cat_of = dict(rows)
    category = np.r_[0, [min(int(cat_of[int(s)] or 0), 1000) for s in vocab.ids]].astype(np.int64)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = TwoTowerConfig(n_streams=len(vocab), n_categories=1001, dim=64, seq_len=20, long_len=20, n_stats=2)
    model = build(cfg, category=category, stats=rng.normal(size=(len(vocab) + 1, 2)).astype(np.float32)).eval()
    with torch.no_grad():
        model.stream_tower.cat_emb.weight.mul_(20.0)          # categories dominate, as after training
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-bench"
    path = Path(settings.artifact_dir) / "retrieval" / version
    save(model, vocab, path, {"version": version, "bench": "random weights (bench/retrieval_http.py)"})
    register_model(settings.database_url, "two_tower", version, str(path),
                   metrics={"bench": "random weights, latency only"}, data_version="bench")
    promote(settings.database_url, "two_tower", version)
    return version


def wait_indexed(port: int, want: int, timeout_s: float = 600) -> dict:
    """Poll /readyz until several answers in a row (both workers) show an index of >= ``want``."""
    deadline, streak, info = time.monotonic() + timeout_s, 0, {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=60) as r:
                info = json.loads(r.read()).get("retrieval") or {}
        except OSError:
            info = {}
        streak = streak + 1 if (info.get("indexed") or 0) >= want else 0
        if streak >= 6:
            return info
        time.sleep(0.5)
    raise SystemExit(f"the live index did not reach {want} streams: {info}")


def figures(name: str, res: dict, **extra) -> dict:
    lat = res["lat"]
    out = {"bench": name, "n": len(lat), "errors": len(res["errors"]),
           "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
           "req_s": round(len(lat) / res["wall_s"], 1) if res["wall_s"] else None, **extra}
    if res["phases"]:
        out["phases_mean_ms"] = {k: round(statistics.fmean(v), 2) for k, v in res["phases"].items()}
    if res["errors"]:
        out["first_error"] = res["errors"][0][:300]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="streams live now besides the simulated ones")
    ap.add_argument("--home", type=Path, help="world folder (reused when it already holds events)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--ranker-epochs", type=int, default=1)
    args = ap.parse_args(argv)

    settings, tmp, fresh = bench_home(args.home, "streamrank-retrieval-http-")
    t0 = time.perf_counter()
    if fresh:
        world = Namespace(streams=700, users=2000, items=3000, days=7, requests_per_day=2000, seed=args.seed,
                          candidates=200, min_live=300)
        build_world(settings, world)
        run_pipeline(settings, with_model=True, ranker_epochs=args.ranker_epochs)
    added = add_live_streams(settings, args.n, args.seed)
    version = register_two_tower(settings, args.seed)
    from store.ingest import live_stream_ids
    live = live_stream_ids(settings.database_url, datetime.now(timezone.utc))
    print(f"world ready in {time.perf_counter() - t0:.0f}s: {len(live):,} streams live ({added:,} added), "
          f"two_tower {version}", file=sys.stderr, flush=True)

    proc, port = serve_gunicorn(settings, threads=4, workers=2)
    try:
        t1 = time.perf_counter()
        info = wait_indexed(port, int(len(live) * 0.99))
        print(json.dumps({"bench": "index_ready", "live": len(live), "indexed": info.get("indexed"),
                          "seconds_after_ready": round(time.perf_counter() - t1, 1)}), flush=True)
        rng = np.random.default_rng(args.seed)
        users = rng.integers(0, 2000, 500).tolist()
        given = rng.choice(live, 200, replace=False).tolist()
        load(port, users, None, args.k, clients=1, requests=args.warmup)
        res = load(port, users, None, args.k, clients=1, requests=args.requests)
        print(json.dumps(figures("retrieval", res, live=len(live), clients=1, target_p99_ms=20.0)), flush=True)
        load(port, users, given, args.k, clients=1, requests=args.warmup)
        res = load(port, users, given, args.k, clients=1, requests=args.requests)
        print(json.dumps(figures("given 200", res, live=len(live), clients=1)), flush=True)
        res = load(port, users, None, args.k, clients=args.clients, duration_s=args.duration)
        print(json.dumps(figures(f"retrieval, {args.clients} clients", res, live=len(live),
                                 clients=args.clients)), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

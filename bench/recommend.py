"""Latency of POST /v1/recommend with 200 candidates vs. reading the same rows from Feast directly.

    python bench/recommend.py [--home DIR] [--requests 300] [--candidates 200] [--server] [--gunicorn]

Builds (or, with ``--home`` pointing at an existing world, reuses) a simulated live-commerce world
with at least ``--candidates`` streams live now, runs the pipeline in-process (statistics ->
Parquet -> Feast materialize; the V1 LightGBM when ranking.gbdt is available), then measures:

  api (test client)    POST /v1/recommend {user_id, candidates: 200 live streams, k: 20} through
                       Flask's test client: parse, snapshot rows, the user's Feast rows, assemble,
                       LightGBM, impression log committed to SQLite, JSON answer
  api (http)           the same over HTTP/1.1 keep-alive to a threaded werkzeug server on 127.0.0.1
                       (--server, default on), and to gunicorn (--gunicorn, 1 worker x 4 threads)
  feast direct (201)   FeatureStore.get_online_features for the same 201 rows: the 200 streams'
                       stream-side refs + the user's own row (what a snapshot-less server reads)
  feast naive (200x)   every GBDT ref for 200 (user, stream, category) rows + 200 stream rows: the
                       API's model input read entirely from Feast per request (no snapshot)

Figures are printed (p50 / p90 / p99 / mean in ms and the ratios); nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pct(values, q):
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def summary(ms: list) -> dict:
    return {"n": len(ms), "p50": pct(ms, 50), "p90": pct(ms, 90), "p99": pct(ms, 99), "mean": statistics.fmean(ms)}


def row(name: str, s: dict) -> str:
    return f"{name:<34} {s['n']:>5} {s['p50']:>9.2f} {s['p90']:>9.2f} {s['p99']:>9.2f} {s['mean']:>9.2f}"


# ----------------------------------------------------------------------------- world
def build_world(settings, args) -> dict:
    from store.ingest import live_stream_ids
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    n_streams = args.streams
    for attempt in range(4):
        cfg = SimConfig(seed=args.seed + attempt, n_users=args.users, n_streams=n_streams, n_items=args.items,
                        days=args.days, requests_per_day=args.requests_per_day, end=end)
        t0 = time.perf_counter()
        data = simulate(cfg)
        lw = data.live_windows
        now = datetime.now(timezone.utc)
        live = lw[(lw.start_ts <= now) & (lw.end_ts > now)].stream_id.nunique()
        if live >= args.candidates:
            break
        n_streams = int(n_streams * 1.3 * args.candidates / max(live, 1))
        print(f"  only {live} streams live now with {cfg.n_streams} streams: retrying with {n_streams}")
    else:
        raise SystemExit("could not simulate enough live streams")
    print(f"  simulated {len(data.events):,} events, {cfg.n_streams} streams ({live} live now), "
          f"{cfg.n_users} users in {time.perf_counter() - t0:.1f}s")
    summary_ = ingest_source(settings, data, progress=False)
    print(f"  ingested at {summary_.get('events_per_s', 0):,.0f} events/s")
    return {"live": len(live_stream_ids(settings.database_url, datetime.now(timezone.utc)))}


def run_pipeline(settings, with_model: bool, ranker_epochs: int = 2) -> None:
    from feature_repo.statistics import run_statistics
    from feature_repo.store import apply_definitions
    t0 = time.perf_counter()
    apply_definitions(settings)
    print(f"  feast apply {time.perf_counter() - t0:.1f}s")
    run_statistics(settings, progress=True)
    if not with_model:
        return
    try:
        from ranking.gbdt import train_and_register
    except ImportError as exc:
        print(f"  ranking.gbdt not available ({exc}): the API will answer with popularity")
        return
    t0 = time.perf_counter()
    row_ = train_and_register(settings, progress=True)
    print(f"  gbdt {row_['version']} ({row_['status']}) in {time.perf_counter() - t0:.1f}s")
    if ranker_epochs <= 0:
        return
    # the transformer ranker (latency does not depend on how long it trained: a short fit is enough)
    from graph.artifacts import train_and_register_embeddings
    from ranking.train import TrainConfig, train_and_register_ranker
    t0 = time.perf_counter()
    train_and_register_embeddings(settings, progress=True)
    row_ = train_and_register_ranker(settings, train_config=TrainConfig(epochs=ranker_epochs, threads=2),
                                     progress=True)
    print(f"  ranker {row_['version']} ({row_['status']}) in {time.perf_counter() - t0:.1f}s")


# ----------------------------------------------------------------------------- measurements
def bench_test_client(app, users, cands, n, k, headers) -> tuple[list, dict]:
    client = app.test_client()
    lat, phases = [], {}
    for i in range(n):
        body = {"user_id": users[i % len(users)], "candidates": cands, "k": k}
        t0 = time.perf_counter()
        r = client.post("/v1/recommend", json=body, headers=headers)
        lat.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"recommend failed: {r.status_code} {r.get_data(as_text=True)[:300]}")
        for part in r.headers.get("Server-Timing", "").split(","):
            if ";dur=" in part:
                name, dur = part.strip().split(";dur=")
                phases.setdefault(name, []).append(float(dur))
    return lat, phases


def bench_http(port, users, cands, n, k, headers) -> list:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat = []
    for i in range(n):
        body = json.dumps({"user_id": users[i % len(users)], "candidates": cands, "k": k})
        t0 = time.perf_counter()
        conn.request("POST", "/v1/recommend", body=body, headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        data = resp.read()
        lat.append((time.perf_counter() - t0) * 1000)
        if resp.status != 200:
            raise SystemExit(f"recommend over HTTP failed: {resp.status} {data[:300]!r}")
    conn.close()
    return lat


def bench_feast(settings, users, cands, cats, n) -> tuple[list, list]:
    from feature_repo.features import GBDT_FEATURE_REFS, STREAM_FEATURE_REFS
    from feature_repo.online import USER_ROW_REFS
    from feature_repo.store import get_store
    store = get_store(settings)
    direct, naive = [], []
    stream_rows = [{"stream_id": s} for s in cands]
    for i in range(n):
        u = users[i % len(users)]
        t0 = time.perf_counter()
        store.get_online_features(features=STREAM_FEATURE_REFS, entity_rows=stream_rows).to_dict()
        store.get_online_features(features=USER_ROW_REFS, entity_rows=[{"user_id": u}]).to_dict()
        direct.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        store.get_online_features(features=GBDT_FEATURE_REFS,
                                  entity_rows=[{"user_id": u, "stream_id": s, "category_id": c}
                                               for s, c in zip(cands, cats)]).to_dict()
        naive.append((time.perf_counter() - t0) * 1000)
    return direct, naive


def serve_werkzeug(app):
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return server, server.server_port


def serve_gunicorn(settings, threads: int = 4):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, **settings.with_(port=port).to_env())
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads",
            str(threads), "--no-control-socket", "--timeout", "120", "--log-level", "warning", "api:create_app()"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    import urllib.request
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("gunicorn did not become ready")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="world folder (reused when it already holds events)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--streams", type=int, default=700)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--requests-per-day", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-model", action="store_true", help="skip GBDT training (popularity answers)")
    ap.add_argument("--ranker-epochs", type=int, default=2,
                    help="epochs of the transformer ranker trained for the bench (0: GBDT only)")
    ap.add_argument("--server", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure over HTTP against a threaded werkzeug server (default on)")
    ap.add_argument("--gunicorn", action="store_true", help="also measure over HTTP against gunicorn")
    args = ap.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from store.ingest import live_stream_ids, load_catalog
    from store.settings import Settings

    tmp = None
    home = args.home
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="streamrank-bench-")
        home = Path(tmp.name) / "var"
    settings = Settings(home=home, api_key=None).ensure_dirs()
    db_file = Path(home) / "streamrank.db"
    fresh = not (db_file.exists() and db_file.stat().st_size > 100_000)
    print(f"world: {home} ({'building' if fresh else 'reusing'})")
    if fresh:
        build_world(settings, args)
    live = live_stream_ids(settings.database_url, datetime.now(timezone.utc))
    if len(live) < args.candidates:
        raise SystemExit(f"only {len(live)} streams live now in {home}; need {args.candidates} (rebuild without --home)")
    if fresh or not (Path(settings.feast_repo) / "registry.db").exists():
        run_pipeline(settings, with_model=not args.no_model, ranker_epochs=args.ranker_epochs)
    else:
        from feature_repo.statistics import run_statistics
        run_statistics(settings, progress=True)      # refresh to now (the world's live set moved on)

    catalog = load_catalog(settings.database_url)
    cats_by_stream = dict(zip(catalog["streams"].stream_id, catalog["streams"].category))
    users = [int(u) for u in catalog["users"].user_id.sample(n=min(500, len(catalog["users"])), random_state=1)]
    cands = [int(s) for s in live[:args.candidates]]
    cats = [int(cats_by_stream[s]) for s in cands]

    from api import close_app, create_app
    app = create_app(settings)
    headers = {}
    print(f"\nwarming up ({args.warmup} requests: Feast import, snapshot, model load) ...")
    bench_test_client(app, users, cands, max(args.warmup, 1), args.k, headers)
    first = app.test_client().post("/v1/recommend", json={"user_id": users[0], "candidates": cands, "k": 3}).get_json()
    snap = app.extensions["streamrank"].snapshot.info()
    print(f"model: {first['model']}; snapshot: {snap['streams']} streams, refreshed every {snap['interval_s']}s "
          f"(read {snap['read_ms']} ms)")

    results = {}
    lat, phases = bench_test_client(app, users, cands, args.requests, args.k, headers)
    served = first["model"]["name"]
    results["api /v1/recommend (test client)"] = summary(lat)
    gbdt_phases = None
    if served == "ranker":              # the same requests with V1 (GBDT) only: the ranker's cost
        app_v1 = create_app(settings)
        app_v1.config["SERVE_RANKER"] = False
        bench_test_client(app_v1, users, cands, max(args.warmup, 1), args.k, headers)
        lat_v1, gbdt_phases = bench_test_client(app_v1, users, cands, args.requests, args.k, headers)
        results["api /v1/recommend, V1 gbdt (test client)"] = summary(lat_v1)
        close_app(app_v1)
    if args.server:
        server, port = serve_werkzeug(app)
        bench_http(port, users, cands, min(args.warmup, 10), args.k, headers)
        results["api /v1/recommend (werkzeug http)"] = summary(bench_http(port, users, cands, args.requests,
                                                                           args.k, headers))
        server.shutdown()
    if args.gunicorn:
        proc, port = serve_gunicorn(settings)
        try:
            bench_http(port, users, cands, args.warmup, args.k, headers)
            results["api /v1/recommend (gunicorn http)"] = summary(bench_http(port, users, cands, args.requests,
                                                                               args.k, headers))
        finally:
            proc.terminate()
            proc.wait(30)
    close_app(app)          # stop the snapshot thread: the Feast-only loops run alone

    bench_feast(settings, users, cands, cats, 10)
    direct, naive = bench_feast(settings, users, cands, cats, args.requests)
    results[f"feast direct ({len(cands) + 1} rows)"] = summary(direct)
    results[f"feast naive (all refs x {len(cands)})"] = summary(naive)

    print(f"\n{len(cands)} candidates, k={args.k}, {args.requests} requests each, ms "
          f"({os.cpu_count()} CPUs; one client, sequential)")
    print(f"{'':<34} {'n':>5} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9}")
    for name, s in results.items():
        print(row(name, s))
    print(f"\nphases of /v1/recommend served by {served} (Server-Timing, test client), ms:")
    for name, vals in phases.items():
        s = summary(vals)
        print(f"  {name:<12} p50 {s['p50']:7.2f}  p99 {s['p99']:7.2f}  mean {s['mean']:7.2f}")
    if "transformer" in phases:
        tr, tot = phases["transformer"], lat
        share = [t / x for t, x in zip(tr, tot)]
        mdl = [t / m for t, m in zip(tr, phases["model"]) if m > 0]
        print(f"\ntransformer share: {100 * statistics.fmean(share):.1f}% of the request (mean), "
              f"{100 * statistics.fmean(mdl):.1f}% of the ranker forward; transformer p50 "
              f"{pct(tr, 50):.2f} ms / p99 {pct(tr, 99):.2f} ms")
    if gbdt_phases is not None:
        print("phases with V1 only (GBDT), ms: " + ", ".join(
            f"{n} p50 {pct(v, 50):.2f}" for n, v in gbdt_phases.items()))
    api = results["api /v1/recommend (test client)"]
    d = results[f"feast direct ({len(cands) + 1} rows)"]
    nv = results[f"feast naive (all refs x {len(cands)})"]
    print(f"\nratio api(test client) / feast direct: p50 {api['p50'] / d['p50']:.2f}x, p99 {api['p99'] / d['p99']:.2f}x")
    print(f"ratio api(test client) / feast naive:  p50 {api['p50'] / nv['p50']:.2f}x, p99 {api['p99'] / nv['p99']:.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

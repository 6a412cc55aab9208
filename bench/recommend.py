"""Latency and throughput of POST /v1/recommend (200 candidates, k = 20) against reading the same
rows from Feast, the targets of the serving-speed issue printed side by side.

    python bench/recommend.py [--home DIR] [--gunicorn] [--duration 60] [--clients 16]
                              [--requests 300] [--candidates 200] [--profile 20] [--freshness]

Builds (or, with ``--home`` pointing at an existing world, reuses) a simulated live-commerce world
with at least ``--candidates`` streams live now, runs the pipeline in-process (statistics ->
Parquet -> Feast materialize, the V1 LightGBM, Metapath2vec, the transformer ranker), then
measures, with no Celery worker running:

  api (test client)    the request through Flask's test client (no HTTP), with its phases
                       (Server-Timing: parse, candidates, registry, user, assemble, score, log;
                       the ranker's inputs / model / transformer)
  gunicorn, 1 client   ``streamrank serve``'s shape: gunicorn, 2 workers x 4 threads, HTTP/1.1
                       keep-alive on 127.0.0.1, one closed-loop client (--requests)
  gunicorn, N clients  the same with --clients closed-loop clients for --duration seconds:
                       req/s, errors, latency
  CPU ms / request     user + system CPU of the gunicorn processes (/proc) over the answers
  feast direct (201)   FeatureStore.get_online_features for the 200 streams' stream-side refs +
                       the user's own row
  feast naive (200x)   every GBDT ref for 200 (user, stream, category) rows + the 200 stream
                       rows: what a snapshot-less server reads per request

Targets (issue "Serve 200 candidates in <= 15 ms p99 ..."): 1 client p50 <= 6 ms, p99 <= 15 ms;
16 clients >= 150 req/s, p99 <= 100 ms, 0 errors; >= 8x faster than feast naive at p50 and p99;
<= 6 ms server CPU per request; with --freshness also target 5 (bench/freshness.py: an event in
the features of a recommend within 1 s, p99 over 120 probes, at 10 batches/s). Figures are
printed; nothing is asserted. ``--profile S`` then samples the gunicorn workers with py-spy
during another S-second load run (bench/pyspy_profile.py) and prints where the time goes.
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
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


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
def bench_home(home, prefix: str):
    """``(settings, tmp, fresh)`` of a bench's world folder: ``home``, or a temporary one (``tmp``
    keeps it alive) when None; ``fresh`` when it holds no event log yet."""
    from store.settings import Settings
    tmp = None
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        home = Path(tmp.name) / "var"
    settings = Settings(home=home, api_key=None).ensure_dirs()
    db_file = Path(home) / "streamrank.db"
    return settings, tmp, not (db_file.exists() and db_file.stat().st_size > 100_000)


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
        if live >= max(args.candidates, args.min_live):
            break
        n_streams = int(n_streams * 1.3 * max(args.candidates, args.min_live) / max(live, 1))
        print(f"  only {live} streams live now with {cfg.n_streams} streams: retrying with {n_streams}")
    else:
        raise SystemExit("could not simulate enough live streams")
    print(f"  simulated {len(data.events):,} events, {cfg.n_streams} streams ({live} live now), "
          f"{cfg.n_users} users in {time.perf_counter() - t0:.1f}s")
    summary_ = ingest_source(settings, data, progress=False)
    print(f"  ingested at {summary_.get('events_per_s', 0):,.0f} events/s")
    return {"live": len(live_stream_ids(settings.database_url, datetime.now(timezone.utc)))}


def run_pipeline(settings, with_model: bool, ranker_epochs: int = 2) -> None:
    from feature_repo.statistics_job import run_statistics
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
    from graph.job import train_and_register_embeddings
    from ranking.job import train_and_register_ranker
    from ranking.train import TrainConfig
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


def _cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list:
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        out += _tree(k)
    return out


def server_cpu_s(master_pid: int) -> float:
    total = 0.0
    for p in _tree(master_pid):
        try:
            total += _cpu_s(p)
        except OSError:
            pass
    return total


def _phases(header: str, into: dict) -> None:
    for part in header.split(","):
        if ";dur=" in part:
            name, dur = part.strip().split(";dur=")
            into.setdefault(name, []).append(float(dur))


def http_post(conn, port: int, path: str, body: str):
    """POST a JSON body on a keep-alive connection: (conn, status, data, headers-getter, error).
    On a socket or protocol error the connection is replaced and status is None."""
    import http.client
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return conn, resp.status, resp.read(), resp.getheader, None
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return http.client.HTTPConnection("127.0.0.1", port, timeout=60), None, b"", None, \
            f"{type(exc).__name__}: {exc}"


def load(port, users, cands, k, *, clients: int, duration_s: float = 0.0, requests: int = 0) -> dict:
    """Closed-loop clients over HTTP keep-alive: each sends the next request when the previous
    answer arrived. Stops after ``requests`` answers per client, or after ``duration_s``."""
    import http.client
    lat, errors, phases, lock = [], [], {}, threading.Lock()
    stop_at = time.monotonic() + duration_s if duration_s else None

    def client(ci: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i, mine, ph = ci, [], {}
        while True:
            if stop_at is not None and time.monotonic() >= stop_at:
                break
            if stop_at is None and len(mine) >= requests:
                break
            req = {"user_id": users[i % len(users)], "k": k}
            if cands is not None:                  # None: the server's default candidates
                req["candidates"] = cands
            body = json.dumps(req)
            i += clients
            t0 = time.perf_counter()
            conn, status, data, header, err = http_post(conn, port, "/v1/recommend", body)
            ms = (time.perf_counter() - t0) * 1000
            if err is not None or status != 200:
                with lock:
                    errors.append(err or f"HTTP {status}: {data[:200]!r}")
                continue
            mine.append(ms)
            _phases(header("Server-Timing") or "", ph)
        conn.close()
        with lock:
            lat.extend(mine)
            for n_, v in ph.items():
                phases.setdefault(n_, []).extend(v)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    return {"lat": lat, "errors": errors, "phases": phases, "wall_s": wall, "answers": len(lat)}


def profile_workers(master_pid: int, port: int, users, cands, args) -> dict:
    """py-spy on every gunicorn worker during another --clients load of --profile seconds."""
    from pyspy_profile import record, summary
    workers = [p for p in _tree(master_pid) if p != master_pid]
    out = {}
    t = threading.Thread(target=lambda: out.update(load(port, users, cands, args.k, clients=args.clients,
                                                        duration_s=args.profile + 4)))
    t.start()
    time.sleep(2)
    files = record(workers, args.profile, Path(args.home or tempfile.gettempdir()) / "pyspy")
    t.join()
    return summary(files, top=30)


def serve_gunicorn(settings, threads: int = 4, workers: int = 1):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, **settings.with_(port=port).to_env())
    from streamrank.cli import serve_argv
    argv = serve_argv(settings.with_(port=port), workers, threads, timeout_s=120, access_log=False)
    argv[-1:-1] = ["--log-level", "warning"]
    logs = Path(settings.home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = open(logs / "gunicorn-bench.log", "ab")      # the JSON request log: one line per request
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
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
    ap.add_argument("--min-live", type=int, default=300, help="streams live now in a new world (at least)")
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
    ap.add_argument("--gunicorn", action="store_true", help="also measure over HTTP against gunicorn")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (streamrank serve's default)")
    ap.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    ap.add_argument("--clients", type=int, default=16, help="closed-loop clients of the throughput run")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the throughput run")
    ap.add_argument("--v1", action="store_true", help="also time the V1 (GBDT) path through the test client")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="with --gunicorn: also sample the workers with py-spy (pip install py-spy) during "
                         "a further load run of SECONDS and print where the time goes")
    ap.add_argument("--freshness", action="store_true",
                    help="also target 5: event -> features delay under 10 batches/s (bench/freshness.py, embedded)")
    args = ap.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from store.ingest import live_stream_ids, load_catalog

    settings, tmp, fresh = bench_home(args.home, "streamrank-bench-")
    home = settings.home
    print(f"world: {home} ({'building' if fresh else 'reusing'})")
    if fresh:
        build_world(settings, args)
    live = live_stream_ids(settings.database_url, datetime.now(timezone.utc))
    if len(live) < args.candidates:
        raise SystemExit(f"only {len(live)} streams live now in {home}; need {args.candidates} (rebuild without --home)")
    if fresh or not (Path(settings.feast_repo) / "registry.db").exists():
        run_pipeline(settings, with_model=not args.no_model, ranker_epochs=args.ranker_epochs)
    else:
        from feature_repo.statistics_job import run_statistics
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

    results, extra = {}, {}
    lat, phases = bench_test_client(app, users, cands, args.requests, args.k, headers)
    served = first["model"]["name"]
    results["api /v1/recommend (test client)"] = summary(lat)
    gbdt_phases = None
    if served == "ranker" and args.v1:          # the same requests with V1 (GBDT) only: the ranker's cost
        app_v1 = create_app(settings)
        app_v1.config["SERVE_RANKER"] = False
        bench_test_client(app_v1, users, cands, max(args.warmup, 1), args.k, headers)
        lat_v1, gbdt_phases = bench_test_client(app_v1, users, cands, args.requests, args.k, headers)
        results["api /v1/recommend, V1 gbdt (test client)"] = summary(lat_v1)
        close_app(app_v1)
    close_app(app)          # stop the snapshot thread: what follows runs alone
    http_phases = None
    profile = None
    if args.gunicorn:
        proc, port = serve_gunicorn(settings, threads=args.threads, workers=args.workers)
        try:
            # warm every worker (model load, snapshot, first reads) on several connections
            load(port, users, cands, args.k, clients=2 * args.workers, requests=max(args.warmup, 5))
            cpu0 = server_cpu_s(proc.pid)
            one = load(port, users, cands, args.k, clients=1, requests=args.requests)
            cpu1 = server_cpu_s(proc.pid)
            many = load(port, users, cands, args.k, clients=args.clients, duration_s=args.duration)
            cpu2 = server_cpu_s(proc.pid)
            if args.profile:        # after the measured runs: py-spy's sampling does not perturb them
                profile = profile_workers(proc.pid, port, users, cands, args)
        finally:
            proc.terminate()
            proc.wait(30)
        results["gunicorn http, 1 client"] = summary(one["lat"])
        results[f"gunicorn http, {args.clients} clients"] = summary(many["lat"] or [float("nan")])
        extra["one"] = {"errors": len(one["errors"]), "req_s": one["answers"] / one["wall_s"],
                        "cpu_ms": 1000 * (cpu1 - cpu0) / max(one["answers"], 1)}
        extra["many"] = {"errors": len(many["errors"]), "req_s": many["answers"] / many["wall_s"],
                         "cpu_ms": 1000 * (cpu2 - cpu1) / max(many["answers"], 1),
                         "first_errors": many["errors"][:3]}
        http_phases = one["phases"]

    bench_feast(settings, users, cands, cats, 10)
    direct, naive = bench_feast(settings, users, cands, cats, args.requests)
    results[f"feast direct ({len(cands) + 1} rows)"] = summary(direct)
    results[f"feast naive (all refs x {len(cands)})"] = summary(naive)

    print(f"\n{len(cands)} candidates, k={args.k}, served by {served}; ms ({os.cpu_count()} CPUs; "
          f"gunicorn {args.workers} workers x {args.threads} threads, no Celery worker running)")
    print(f"{'':<34} {'n':>5} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9}")
    for name, st in results.items():
        print(row(name, st))
    if extra:
        for key, label in (("one", "1 client"), ("many", f"{args.clients} clients")):
            e = extra[key]
            print(f"gunicorn, {label:<11}: {e['req_s']:7.1f} req/s, {e['errors']} errors, "
                  f"server CPU {e['cpu_ms']:.2f} ms per request")
        if extra["many"]["first_errors"]:
            print("  first errors:", extra["many"]["first_errors"])
    show = http_phases or phases
    print(f"\nphases of /v1/recommend ({'gunicorn, 1 client' if http_phases else 'test client'}; "
          f"Server-Timing), ms:")
    for name, vals in show.items():
        st = summary(vals)
        print(f"  {name:<12} p50 {st['p50']:7.2f}  p99 {st['p99']:7.2f}  mean {st['mean']:7.2f}")
    if gbdt_phases is not None:
        print("phases with V1 only (GBDT), ms: " + ", ".join(
            f"{n} p50 {pct(v, 50):.2f}" for n, v in gbdt_phases.items()))
    nv = results[f"feast naive (all refs x {len(cands)})"]
    ref_name = "gunicorn http, 1 client" if args.gunicorn else "api /v1/recommend (test client)"
    api = results[ref_name]
    print(f"\nfeast naive / {ref_name}: p50 {nv['p50'] / api['p50']:.2f}x, p99 {nv['p99'] / api['p99']:.2f}x faster")
    if args.gunicorn:
        one_s, many_s = results["gunicorn http, 1 client"], results[f"gunicorn http, {args.clients} clients"]
        checks = [("1 client p50 <= 6 ms", one_s["p50"], 6.0, "<="), ("1 client p99 <= 15 ms", one_s["p99"], 15.0, "<="),
                  (f"{args.clients} clients >= 150 req/s", extra["many"]["req_s"], 150.0, ">="),
                  (f"{args.clients} clients p99 <= 100 ms", many_s["p99"], 100.0, "<="),
                  (f"{args.clients} clients 0 errors", extra["many"]["errors"], 0, "<="),
                  ("feast naive / api >= 8x at p50", nv["p50"] / one_s["p50"], 8.0, ">="),
                  ("feast naive / api >= 8x at p99", nv["p99"] / one_s["p99"], 8.0, ">="),
                  ("server CPU <= 6 ms / request (16 clients)", extra["many"]["cpu_ms"], 6.0, "<=")]
        print("\ntargets:")
        for label, got, bar, op in checks:
            ok = got <= bar if op == "<=" else got >= bar
            print(f"  {'met    ' if ok else 'NOT met'}  {label:<44} measured {got:.2f}")
    if profile is not None:
        from pyspy_profile import print_summary
        print(f"\nwhere the time goes (py-spy, gunicorn workers, {args.clients} clients, {args.profile:.0f} s):")
        print_summary(profile, top=18)
        extra["profile"] = profile
    if args.freshness:              # target 5, on the same world (starts its own API and real-time worker)
        from freshness import print_result, run as run_freshness
        log_dir = Path(home) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        fr = run_freshness(settings, probes=120, batches_per_s=10.0, timeout_s=30.0, log_dir=log_dir)
        print()
        print_result("embedded: SQLite online store, sqla broker", fr)
        extra["freshness"] = fr
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "extra": extra, "served": served,
                                               "candidates": len(cands), "k": args.k}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mixed load on the production serving shape: 80 % recommend, 20 % event batches, nothing lost.

    python bench/load.py [--home DIR] [--clients 16 64] [--duration 60] [--events-per-batch 10]

On a world (``--home``: an existing one, e.g. bench/recommend.py's; default: a new small one
built like bench/recommend.py does, GBDT only) it starts ``streamrank serve``'s gunicorn
(2 workers x 4 threads, api/gunicorn_worker.py) and, for each ``--clients`` value, runs that many
closed-loop HTTP keep-alive clients for ``--duration`` seconds: each request is a recommend of
the streams live now (k = 20) with probability 0.8, else a batch of ``--events-per-batch`` click
events with fresh ids. It prints per run req/s, p50 / p99 per route, errors, and afterwards the
events acknowledged (a 200 on POST /v1/events) against the events found in the event log, the
impressions of the answers against those in the log (after the journal's flush), and each
gunicorn worker's RSS before (started, nothing loaded yet) and after each run. No Celery worker runs: pushes wait in the broker and
the outbox. Figures are printed; nothing is asserted.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from recommend import _tree, bench_home, build_world, http_post, pct, run_pipeline, serve_gunicorn  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def mixed(port: int, users: list, live: list, *, clients: int, duration_s: float, per_batch: int,
          seed: int) -> dict:
    lat = {"recommend": [], "events": []}
    errors, acked, shown, lock = [], [], [], threading.Lock()
    stop_at = time.monotonic() + duration_s

    def client(ci: int):
        rng = random.Random(seed * 1000 + ci)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = {"recommend": [], "events": []}
        my_acked, my_shown = [], []
        while time.monotonic() < stop_at:
            if rng.random() < 0.8:
                route, body = "recommend", {"user_id": rng.choice(users), "k": 20}
            else:
                now = datetime.now(timezone.utc).isoformat()
                batch = [{"event_id": f"load-{uuid.uuid4().hex}", "user_id": rng.choice(users), "ts": now,
                          "type": rng.choice(["click", "watch"]), "stream_id": rng.choice(live)}
                         for _ in range(per_batch)]
                for ev in batch:
                    if ev["type"] == "watch":
                        ev["value"] = float(rng.randint(5, 600))
                route, body = "events", {"events": batch}
            t0 = time.perf_counter()
            conn, status, data, _, err = http_post(conn, port, f"/v1/{route}", json.dumps(body))
            ms = (time.perf_counter() - t0) * 1000
            if err is not None or status != 200:
                with lock:
                    errors.append(f"{route}: " + (err or f"HTTP {status}: {data[:200]!r}"))
                continue
            mine[route].append(ms)
            if route == "events":
                my_acked += [ev["event_id"] for ev in body["events"]]
            else:
                out = json.loads(data)
                if out.get("impressions", {}).get("journaled"):
                    my_shown += [f"imp-{out['request_id']}-{it['position']}" for it in out["items"]]
        conn.close()
        with lock:
            for r in lat:
                lat[r].extend(mine[r])
            acked.extend(my_acked)
            shown.extend(my_shown)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"lat": lat, "errors": errors, "acked": acked, "shown": shown, "wall_s": time.monotonic() - t0}


def found_in_log(database_url: str, ids: list) -> int:
    import sqlalchemy as sa

    from store.db import get_engine
    from store.schema import Event
    n = 0
    with get_engine(database_url).connect() as conn:
        for i in range(0, len(ids), 5000):
            part = ids[i:i + 5000]
            n += conn.execute(sa.select(sa.func.count()).select_from(Event).where(Event.event_id.in_(part))).scalar()
    return int(n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="an existing world (default: build a small one in a temp dir)")
    ap.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--events-per-batch", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING)
    from store.ingest import live_stream_ids, load_catalog
    settings, tmp, fresh = bench_home(args.home, "streamrank-load-")
    home = settings.home
    if fresh:
        world = argparse.Namespace(streams=120, users=800, items=600, days=3, requests_per_day=600, seed=args.seed,
                                   min_live=20, candidates=20)
        print(f"world: building a small one in {home}")
        build_world(settings, world)
        run_pipeline(settings, with_model=True, ranker_epochs=0)
    live = live_stream_ids(settings.database_url, datetime.now(timezone.utc))
    if not live:
        raise SystemExit(f"no stream is live now in {home}")
    users = [int(u) for u in load_catalog(settings.database_url)["users"].user_id.tolist()]
    proc, port = serve_gunicorn(settings, threads=args.threads, workers=args.workers)
    results = {}
    try:
        workers = [p for p in _tree(proc.pid) if p != proc.pid]
        rss0 = {p: rss_mb(p) for p in workers}
        print(f"\ngunicorn {args.workers} workers x {args.threads} threads; {len(live)} streams live; "
              f"80 % recommend (k = 20, the live streams) / 20 % batches of {args.events_per_batch} click/watch events")
        print(f"{'clients':>7} {'req/s':>7} {'recommend p50':>14} {'p99':>8} {'events p50':>11} {'p99':>8} {'errors':>7}")
        runs = []
        for clients in args.clients:
            r = mixed(port, users, live, clients=clients, duration_s=args.duration, per_batch=args.events_per_batch,
                      seed=args.seed + clients)
            n = len(r["lat"]["recommend"]) + len(r["lat"]["events"])
            rec, evs = r["lat"]["recommend"], r["lat"]["events"]
            print(f"{clients:>7} {n / r['wall_s']:>7.1f} {pct(rec, 50):>14.1f} {pct(rec, 99):>8.1f} "
                  f"{pct(evs, 50):>11.1f} {pct(evs, 99):>8.1f} {len(r['errors']):>7}")
            if r["errors"]:
                print("   first errors:", r["errors"][:3])
            r["rss_mb"] = {p: rss_mb(p) for p in workers}
            print(f"{'':>7} RSS after: " + ", ".join(f"worker {p} {v:.0f} MB" for p, v in r["rss_mb"].items()))
            runs.append(r)
            results[f"{clients} clients"] = {"req_s": n / r["wall_s"], "errors": len(r["errors"]),
                                             "recommend_p50": pct(rec, 50), "recommend_p99": pct(rec, 99),
                                             "events_p50": pct(evs, 50), "events_p99": pct(evs, 99)}
        rss1 = {p: rss_mb(p) for p in workers}      # the same as after the last run
        time.sleep(3)                                  # the journals' flush (every 0.2 s)
    finally:
        proc.terminate()
        proc.wait(30)
    acked = [i for r in runs for i in r["acked"]]
    shown = [i for r in runs for i in r["shown"]]
    n_acked, n_shown = found_in_log(settings.database_url, acked), found_in_log(settings.database_url, shown)
    print(f"\nevents acknowledged: {len(acked):,}; found in the event log: {n_acked:,}; "
          f"missing: {len(acked) - n_acked:,}")
    print(f"impressions answered (journaled): {len(shown):,}; in the event log: {n_shown:,}; "
          f"missing: {len(shown) - n_shown:,}")
    for p in workers:
        print(f"gunicorn worker {p}: RSS {rss0[p]:.0f} MB before, {rss1[p]:.0f} MB after")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "acked": len(acked), "acked_found": n_acked,
                                               "shown": len(shown), "shown_found": n_shown,
                                               "rss_mb": {str(p): [rss0[p], rss1[p]] for p in workers}}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

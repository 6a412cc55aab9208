"""Event ingest throughput: bulk ``store.ingest.ingest_events`` and ``POST /v1/events`` (batches of 500).

    python bench/ingest.py [--events 100000] [--api-events 20000] [--batch 500] [--home DIR]

A simulated world is generated (its catalog upserted first); then, each in a fresh database:

  bulk            ingest_events(url, frame) on chunks of ``--chunk`` events (one transaction each)
  bulk (re-send)  the same chunks again: every event a duplicate (the idempotency check's cost)
  api             POST /v1/events with ``--batch`` events per request through Flask's test client
                  (JSON encode + parse + validation + commit + push enqueue on the embedded broker)
  api (re-send)   the same requests again (all duplicates: nothing enqueued)

Figures are printed (events/s, ms per batch); nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))] if s else float("nan")


def as_json_rows(frame) -> list[dict]:
    import pandas as pd
    """The events as a client would send them (ISO times, no nulls)."""
    out = []
    for rec in frame.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                continue
            if k == "ts":
                v = v.isoformat()
            elif hasattr(v, "item"):
                v = v.item()
            row[k] = v
        out.append(row)
    return out


def fresh_settings(base: Path, name: str, catalog: dict):
    from store.ingest import upsert_catalog
    from store.settings import Settings
    s = Settings(home=base / name).ensure_dirs()
    upsert_catalog(s.database_url, **catalog)
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="events for the bulk path")
    ap.add_argument("--api-events", type=int, default=20_000, help="events sent through POST /v1/events")
    ap.add_argument("--batch", type=int, default=500, help="events per POST /v1/events")
    ap.add_argument("--chunk", type=int, default=50_000, help="events per bulk ingest_events call")
    ap.add_argument("--home", type=Path, help="folder for the databases (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING)
    from store.ingest import ingest_events
    from store.sources.simulator import SimConfig, simulate

    tmp = None
    base = args.home
    if base is None:
        tmp = tempfile.TemporaryDirectory(prefix="streamrank-bench-ingest-")
        base = Path(tmp.name)
    base.mkdir(parents=True, exist_ok=True)

    need = max(args.events, args.api_events)
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    t0 = time.perf_counter()
    days = 3.0
    while True:
        data = simulate(SimConfig(seed=args.seed, n_users=3000, n_streams=300, n_items=3000, days=days,
                                  requests_per_day=3000, end=end))
        if len(data.events) >= need or days > 365:
            break
        days = math.ceil(days * 1.2 * need / max(len(data.events), 1))
    events = data.events.iloc[:need].reset_index(drop=True)
    catalog = data.catalog()
    print(f"simulated {len(data.events):,} events in {time.perf_counter() - t0:.1f}s; using {len(events):,}")
    rows = []

    # ---- bulk
    s = fresh_settings(base, "bulk", catalog)
    bulk = events.iloc[:args.events]
    for label in ("bulk ingest_events", "bulk re-send (duplicates)"):
        t0 = time.perf_counter()
        ins = dup = 0
        for i in range(0, len(bulk), args.chunk):
            r = ingest_events(s.database_url, bulk.iloc[i:i + args.chunk])
            ins += r.inserted
            dup += r.duplicates
        dt = time.perf_counter() - t0
        rows.append((label, len(bulk), dt, ins, dup, None))

    # ---- API
    from api import close_app, create_app
    s = fresh_settings(base, "api", catalog)
    app = create_app(s)
    client = app.test_client()
    api_rows = as_json_rows(events.iloc[:args.api_events])
    bodies = [json.dumps({"events": api_rows[i:i + args.batch]}) for i in range(0, len(api_rows), args.batch)]
    warm = dict(api_rows[0], event_id="bench-warmup-0")      # Celery app + broker tables, first commit
    client.post("/v1/events", data=json.dumps([warm]), content_type="application/json")
    enqueued = 0
    for label in ("POST /v1/events", "POST /v1/events re-send"):
        t0 = time.perf_counter()
        ins = dup = 0
        per = []
        for body in bodies:
            t1 = time.perf_counter()
            r = client.post("/v1/events", data=body, content_type="application/json")
            per.append((time.perf_counter() - t1) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"POST /v1/events failed: {r.status_code} {r.get_data(as_text=True)[:300]}")
            out = r.get_json()
            ins += out["inserted"]
            dup += out["duplicates"]
            enqueued += bool(out["push_enqueued"])
        dt = time.perf_counter() - t0
        rows.append((label, len(api_rows), dt, ins, dup, per))
    close_app(app)

    print(f"\n{'path':<28} {'events':>8} {'seconds':>8} {'events/s':>10} {'inserted':>9} {'dupes':>7}"
          f" {'ms/batch p50':>13} {'p99':>7}")
    for label, n, dt, ins, dup, per in rows:
        extra = f" {pct(per, 50):>13.1f} {pct(per, 99):>7.1f}" if per else ""
        print(f"{label:<28} {n:>8,} {dt:>8.2f} {n / dt:>10,.0f} {ins:>9,} {dup:>7,}{extra}")
    print(f"\nbatches of {args.batch} through the Flask test client; bulk chunks of {args.chunk:,}; "
          f"push_realtime enqueued for {enqueued} batches on {s.broker_url.split(':', 1)[0]}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

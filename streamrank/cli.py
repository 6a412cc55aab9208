"""``streamrank`` — ingest | pipeline | worker | beat | serve | evaluate | evaluate-graph | run.

Every command reads its configuration from ``STREAMRANK_*`` environment variables
(:class:`store.settings.Settings`); data paths are arguments. Heavy libraries are imported by
the command that needs them, so ``streamrank --help`` starts fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

# torch's OpenMP threads spin at barriers by default: beside another busy process on a small
# machine (a worker training while the API scores, two training jobs) a step ran 12-25x slower
# (measured by bench/peers.py). Passive waiting costs little when alone. Set before torch loads;
# inherited by the workers and the API that `run` starts; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

log = logging.getLogger("streamrank")


def _settings():
    from store.settings import Settings
    return Settings.from_env().ensure_dirs()


# ----------------------------------------------------------------------------- ingest
def load_source(source: str, path: str | None, args=None):
    """Map a data source onto the event/catalog contract (store.sources.*)."""
    if source == "simulator":
        from store.sources.simulator import SimConfig, simulate
        cfg = SimConfig(seed=getattr(args, "seed", 0) or 0)
        if getattr(args, "days", None):
            cfg.days = args.days
        if getattr(args, "users", None):
            cfg.n_users = args.users
        return simulate(cfg)
    if path is None:
        raise SystemExit(f"--path is required for --source {source}")
    if not Path(path).exists():
        raise SystemExit(f"--path {path}: no such file or folder")
    if source == "twitch":
        from store.sources.twitch import load_twitch
        return load_twitch(path)
    if source == "obd":
        from store.sources.obd import load_obd
        return load_obd(path)
    if source == "events":
        from store.sources.events_file import load_events_file
        return load_events_file(path, catalog_dir=getattr(args, "catalog", None))
    raise SystemExit(f"unknown source {source!r}")


def cmd_ingest(args) -> int:
    from store.sources import ingest_source
    settings = _settings()
    t0 = time.perf_counter()
    data = load_source(args.source, args.path, args)
    log.info("loaded %s: %d events in %.1fs", args.source, len(data.events), time.perf_counter() - t0)
    summary = ingest_source(settings, data, progress=True)
    print(json.dumps({"source": args.source, **summary}, default=str))
    return 0


# ----------------------------------------------------------------------------- pipeline
def _wait(result, name: str, timeout: float) -> dict:
    t0 = time.monotonic()
    last = None
    while not result.ready():
        state = result.state
        elapsed = time.monotonic() - t0
        if state != last or int(elapsed) % 10 == 0:
            print(f"  {name}: {state.lower()} ({elapsed:.0f}s)", flush=True)
            last = state
        if elapsed > timeout:
            raise SystemExit(f"{name} did not finish within {timeout:.0f}s (state {state}); is a worker running? "
                             "start one with `streamrank worker`")
        time.sleep(1.0)
    value = result.get(propagate=False)
    if result.failed():
        raise SystemExit(f"{name} failed: {value!r}")
    print(f"  {name}: done in {time.monotonic() - t0:.1f}s", flush=True)
    return value


def run_pipeline(settings, *, end: str | None = None, timeout: float = 3600.0) -> dict:
    """Send the jobs to the Celery workers by name, in order, and wait for each."""
    from workers.celery_app import TASK_NAMES, make_celery
    celery = make_celery(settings)
    end = end or datetime.now(timezone.utc).isoformat()
    out = {}
    print("pipeline: statistics → materialize", flush=True)
    out["statistics"] = _wait(celery.send_task(TASK_NAMES["compute_statistics"], kwargs={"end": end}),
                              "compute_statistics", timeout)
    print("pipeline: Metapath2vec graph embeddings", flush=True)
    out["graph"] = _wait(celery.send_task(TASK_NAMES["train_graph_embeddings"], kwargs={"end": end}),
                         "train_graph_embeddings", timeout)
    print("pipeline: LightGBM ranker (V1)", flush=True)
    out["gbdt"] = _wait(celery.send_task(TASK_NAMES["train_gbdt"], kwargs={"end": end}), "train_gbdt", timeout)
    print("pipeline: transformer ranker (GBDT leaves + Metapath2vec + sequences, MMoE, Biasnet)", flush=True)
    out["ranker"] = _wait(celery.send_task(TASK_NAMES["train_ranker"], kwargs={"end": end}), "train_ranker",
                          timeout)
    print("pipeline: retrieval two-tower (Metapath2vec vectors + the users' recent streams)", flush=True)
    out["retrieval"] = _wait(celery.send_task(TASK_NAMES["train_retrieval"], kwargs={"end": end}), "train_retrieval",
                             timeout)
    return out


def cmd_pipeline(args) -> int:
    out = run_pipeline(_settings(), end=args.end, timeout=args.timeout)
    print(json.dumps(out, default=str))
    return 0


# ----------------------------------------------------------------------------- processes
def worker_argv(queues: str, pool: str, concurrency: int, name: str) -> list:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queues,
            "--pool", pool, "--concurrency", str(concurrency), "-n", f"{name}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle"]


def cmd_worker(args) -> int:
    argv = worker_argv(args.queues, args.pool, args.concurrency, args.name)
    os.execv(argv[0], argv)


def cmd_beat(args) -> int:
    settings = _settings()
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO",
            "--schedule", str(settings.home / "celerybeat-schedule")]
    os.execv(argv[0], argv)


def serve_argv(settings, workers: int, threads: int, *, timeout_s: int = 60, access_log: bool = False) -> list:
    """The gunicorn command line of ``streamrank serve`` (also used by the tests and benches):
    gthread with JSON errors and a read timeout (api/gunicorn_worker.py). The request log is the
    app's JSON lines (api/requestlog.py); ``access_log`` adds gunicorn's plain-text one."""
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{settings.port}", "--workers", str(workers),
            "--threads", str(threads), "--config", "python:api.gunicorn_conf",
            "--worker-class", "api.gunicorn_worker.ThreadWorker", "--no-control-socket",
            "--timeout", str(timeout_s)]
    if access_log:
        argv += ["--access-logfile", "-"]
    return argv + ["api:create_app()"]


def cmd_serve(args) -> int:
    settings = _settings()
    if args.dev:
        from api import create_app
        create_app(settings).run(host="127.0.0.1", port=settings.port, threaded=True)
        return 0
    argv = serve_argv(settings, args.workers, args.threads)
    os.execv(argv[0], argv)


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    if args.source != "twitch":
        raise SystemExit("evaluate supports --source twitch (the simulator's evaluation is printed by `make run`)")
    train, test = args.train, args.test
    tmp = None
    if args.path:
        if args.split_slot is None:
            raise SystemExit("--path needs --split-slot N (train = slots < N, test = slots >= N)")
        import pandas as pd
        df = pd.read_csv(args.path)
        tmp = Path(tempfile.mkdtemp(prefix="streamrank-split-"))
        train, test = str(tmp / "train.csv"), str(tmp / "test.csv")
        df[df.slot < args.split_slot].to_csv(train, index=False)
        df[df.slot >= args.split_slot].to_csv(test, index=False)
    if not (train and test):
        raise SystemExit("give --train P1 --test P2 (or --path P --split-slot N)")
    for p in (train, test):
        if not Path(p).exists():
            raise SystemExit(f"{p}: no such file")
    from ranking.twitch_eval import evaluate_twitch
    models = tuple(args.models.split(",")) if args.models else ("popularity", "repeat", "lightgbm", "ranker")
    try:
        rows = evaluate_twitch(train, test, models=models)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


def cmd_evaluate_graph(args) -> int:
    """Held-out link prediction of the Metapath2vec embeddings vs degree-product and popularity."""
    from graph.evaluate import evaluate_link_prediction
    from graph.metapath2vec import M2VConfig
    if args.source == "taobao":
        raise SystemExit("evaluate-graph scores user–stream links; the Taobao sample has no streams")
    if args.source == "db":
        from store.ingest import load_catalog, load_events
        settings = _settings()
        events, catalog = load_events(settings.database_url), load_catalog(settings.database_url)
    else:
        data = load_source(args.source, args.path, args)
        events, catalog = data.events, data
    cfg = M2VConfig(seed=args.seed)
    if args.epochs:
        cfg.epochs = args.epochs
    out = evaluate_link_prediction(events, catalog, config=cfg, holdout_frac=args.holdout, seed=args.seed)
    for row in out["rows"]:
        print(json.dumps(row), flush=True)
    print(json.dumps({"split": out["split"], "graph": out["graph"], "train": out["train"],
                      "metapaths": out["metapaths"]}, default=str), file=sys.stderr)
    return 0


def cmd_evaluate_retrieval(args) -> int:
    """Whole-catalog retrieval of each test watch (retrieval/evaluate.py): one JSON line per model and subset."""
    if args.source != "twitch":
        raise SystemExit("evaluate-retrieval supports --source twitch")
    import pandas as pd

    from retrieval.evaluate import MODELS, evaluate_retrieval, read_twitch
    if args.path:
        if args.split_slot is None:
            raise SystemExit("--path needs --split-slot N (train = slots < N, test = slots >= N)")
        if not Path(args.path).exists():
            raise SystemExit(f"{args.path}: no such file")
        df = pd.read_csv(args.path)
        if "slot" not in df.columns:
            raise SystemExit(f"{args.path}: no 'slot' column (need user_id, streamer_id, slot[, community])")
        train, test = df[df.slot < args.split_slot], df[df.slot >= args.split_slot]
    elif args.train and args.test:
        for p in (args.train, args.test):
            if not Path(p).exists():
                raise SystemExit(f"{p}: no such file")
        train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    else:
        raise SystemExit("give --train P1 --test P2 (or --path P --split-slot N)")
    try:
        train, test = read_twitch(train), read_twitch(test)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not len(train) or not len(test):
        raise SystemExit(f"empty split: {len(train)} train rows, {len(test)} test rows")
    models = tuple(args.models.split(",")) if args.models else MODELS
    try:
        rows = evaluate_retrieval(train, test, models=models, live_only=args.live_only, seed=args.seed,
                                  epochs=args.epochs, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


def cmd_evaluate_ope(args) -> int:
    """Off-policy evaluation (ope/evaluate.py): one JSON line per estimator."""
    if args.source != "obd":
        raise SystemExit("evaluate-ope supports --source obd")
    from ope.estimators import ESTIMATORS
    from ope.evaluate import evaluate_ope, plot
    for p in (args.logged, args.target):
        if not Path(p).is_dir():
            raise SystemExit(f"{p}: no such folder (an OBD <policy>/<campaign> folder)")
    estimators = tuple(args.estimators.split(",")) if args.estimators else ESTIMATORS
    try:
        rows = evaluate_ope(args.logged, args.target, campaign=args.campaign, estimators=estimators,
                            n_sim=args.n_sim, seed=args.seed, n_boot=args.bootstrap, prior=args.prior,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(str(exc)) from None
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def cmd_position_curve(args) -> int:
    """The examination curve of a log with positions (ope/position_curve.py): JSON lines + a plot."""
    from ope.position_curve import impressions_with_clicks, plot, position_curve
    from store.sources.events_file import _read_table
    path = Path(args.events)
    if not path.exists():
        raise SystemExit(f"{path}: no such file")
    try:
        events = _read_table(path)
        missing = {"type", "request_id", "stream_id", "position", "user_id"} - set(events.columns)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)} (the generic events format)")
        imps = impressions_with_clicks(events)
        method, rows = position_curve(imps, method=args.method, max_position=args.max_position,
                                      n_boot=args.bootstrap, seed=args.seed)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(f"method: {method} ({'the randomised requests' if method == 'randomised' else 'EM over every impression'}, "
          f"{len(imps):,} impressions)", file=sys.stderr)
    for r in rows:
        rnd = lambda v: None if v is None else round(v, 6)         # noqa: E731
        print(json.dumps({"position": r["position"], "examination": rnd(r["examination"]),
                          "ci_low": rnd(r["ci_low"]), "ci_high": rnd(r["ci_high"]), "n": r["n"],
                          "method": method}), flush=True)
    out = args.plot or str(path.with_suffix("")) + "-position-curve.png"
    plot(method, rows, out)
    print(f"plot: {out}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    """The ranker's evolution V1 → V4 and its ablations (ranking/report.py): docs/evolution.md + plots."""
    from ranking.report import run
    if args.source == "twitch" and not args.path:
        raise SystemExit("--source twitch needs --path (the Twitch watches CSV)")
    if args.path and not Path(args.path).exists():
        raise SystemExit(f"{args.path}: no such file")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    ablations = None if args.ablations is None else [a for a in args.ablations.split(",") if a]
    try:
        res = run(args.source, path=args.path, split_slot=args.split_slot, sim_seed=args.sim_seed,
                  sim_days=args.sim_days, seeds=seeds, ablations=ablations, out=args.out, epochs=args.epochs,
                  max_train_rows=args.max_train_rows)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(json.dumps({"markdown": res["markdown"], "plots": res["plots"], "results": len(res["rows"])}))
    return 0


# ----------------------------------------------------------------------------- run (make run)
def _has_live_streams(settings) -> bool:
    from store.ingest import live_stream_ids
    return bool(live_stream_ids(settings.database_url, datetime.now(timezone.utc)))


_SIGNALLED: list = []


def _exit_on_signal(signum, frame):
    # SIGTERM / SIGHUP (a closed terminal, `kill`, a supervisor) take the same way out as Ctrl-C:
    # the finally below stops the workers and the API (the default action would orphan them)
    _SIGNALLED.append(signum)
    raise SystemExit(128 + signum)


def cmd_run(args) -> int:
    """Ingest the simulated world, start workers, run the pipeline through them, serve the API."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    settings = _settings()
    if not settings.worker_metrics_port:          # the workers' /metrics: PORT + 10, + 11
        settings = settings.with_(worker_metrics_port=settings.port + 10)
    env = {**os.environ, **settings.to_env()}
    if not _has_live_streams(settings):
        print("run: ingesting the simulated live-commerce world (no stream is live now in this database)", flush=True)
        from store.sources import ingest_source
        data = load_source("simulator", None, args)
        summary = ingest_source(settings, data, progress=True)
        print("run: " + json.dumps(summary, default=str), flush=True)
    else:
        print("run: the database already has streams live now; not ingesting again", flush=True)

    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []

    def stop_all(*_):
        for sig in (signal.SIGTERM, signal.SIGHUP):     # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    try:
        for name, queues, pool, conc in (("realtime", "realtime,default", "threads", 16),
                                         ("training", "training", "solo", 1)):
            f = open(logs / f"worker-{name}.log", "ab")
            procs.append(subprocess.Popen(worker_argv(queues, pool, conc, name), env=env, stdout=f,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            print(f"run: started Celery worker {name} (queues {queues}, pool {pool}); log {logs}/worker-{name}.log",
                  flush=True)
        out = run_pipeline(settings, timeout=args.timeout)
        metrics = (out.get("gbdt") or {}).get("metrics", {})
        print("\n=== V1 (LightGBM on Feast statistics): validation on the latest impressions ===")
        for key in ("auc", "gauc", "logloss", "popularity_auc", "oracle_auc", "n"):
            if key in metrics:
                print(f"  {key:>15}: {metrics[key]}")
        ranker = out.get("ranker") or {}
        rm = ranker.get("metrics", {})
        print("\n=== transformer ranker (MMoE: click, conversion, stay; Biasnet in training only) ===")
        for key in ("auc", "gauc", "logloss", "cvr_auc_clicked", "cvr_auc_all", "stay_rmse", "oracle_auc",
                    "ndcg@10_true", "position_curve_max_err", "n"):
            if key in rm:
                print(f"  {key:>22}: {rm[key]}")
        if ranker.get("report"):
            print(f"  report: {ranker['report']}")
        print(f"  serving: {ranker.get('name')} {ranker.get('version')} ({ranker.get('status')})")
        api = subprocess.Popen(serve_argv(settings, args.api_workers, 4), env=env, start_new_session=True)
        procs.append(api)
        _wait_http(settings.port, api)
        curl = (f"curl -s -X POST http://127.0.0.1:{settings.port}/v1/recommend -H 'Content-Type: application/json' "
                + ("-H \"X-API-Key: $STREAMRANK_API_KEY\" " if settings.api_key else "")
                + "-d '{\"user_id\": 1, \"k\": 5}'")
        print(f"\nrun: the API is up on http://127.0.0.1:{settings.port} — try:\n  {curl}\n"
              f"run: metrics: http://127.0.0.1:{settings.port}/metrics (API), "
              f"http://127.0.0.1:{settings.worker_metrics_port}/metrics and :{settings.worker_metrics_port + 1} "
              f"(workers)\n", flush=True)
        if args.smoke:
            print(_smoke(settings), flush=True)
            return 0
        print("run: Ctrl-C stops the API and the workers", flush=True)
        api.wait()
        return api.returncode or 0
    except KeyboardInterrupt:
        return 0
    except Exception:
        # the signal's SystemExit can land inside a library that turns it into another error on its
        # way out (kombu's publish retry, seen under load): the exit status is still the signal's
        if _SIGNALLED:
            log.warning("stopped by signal %d", _SIGNALLED[0])
            return 128 + _SIGNALLED[0]
        raise
    finally:
        stop_all()


def _wait_http(port: int, proc, timeout: float = 120.0) -> None:
    import urllib.request
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit("the API process exited during start-up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:   # warm: Feast loaded
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the API did not answer on port {port} within {timeout:.0f}s")


def _smoke(settings) -> str:
    import urllib.request
    from store.ingest import load_events
    users = load_events(settings.database_url, types=["click"]).user_id
    user = int(users.iloc[-1]) if len(users) else 1
    req = urllib.request.Request(f"http://127.0.0.1:{settings.port}/v1/recommend", method="POST",
                                 data=json.dumps({"user_id": user, "k": 5}).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"X-API-Key": settings.api_key} if settings.api_key else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamrank", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="load a data source into the event log")
    s.add_argument("--source", required=True, choices=["simulator", "twitch", "obd", "events"])
    s.add_argument("--path", help="file or folder of the source (not for simulator)")
    s.add_argument("--catalog", help="events source: folder with users/items/streams/... files")
    s.add_argument("--seed", type=int, default=0, help="simulator seed")
    s.add_argument("--days", type=int, help="simulator: days of history")
    s.add_argument("--users", type=int, help="simulator: number of users")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("pipeline", help="run statistics → materialize → LightGBM through the Celery workers")
    s.add_argument("--end", help="ISO time the statistics are computed up to (default now)")
    s.add_argument("--timeout", type=float, default=3600)
    s.set_defaults(func=cmd_pipeline)

    s = sub.add_parser("worker", help="start a Celery worker")
    s.add_argument("--queues", default="realtime,default,training")
    s.add_argument("--pool", default="solo", help="solo (safe with torch) | threads | prefork")
    s.add_argument("--concurrency", type=int, default=1)
    s.add_argument("--name", default="worker")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("beat", help="start Celery beat (statistics hourly, models daily)")
    s.set_defaults(func=cmd_beat)

    s = sub.add_parser("serve", help="serve the API with gunicorn on 127.0.0.1:$STREAMRANK_PORT")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--dev", action="store_true", help="Flask's development server instead of gunicorn")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("evaluate", help="offline evaluation protocol (Twitch)")
    s.add_argument("--source", required=True, choices=["twitch"])
    s.add_argument("--train")
    s.add_argument("--test")
    s.add_argument("--path", help="one file to split by slot instead of --train/--test")
    s.add_argument("--split-slot", type=int)
    s.add_argument("--models", help="comma-separated subset (popularity,repeat,recent_viewers,lightgbm,ranker)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("evaluate-graph", help="held-out link prediction of the graph embeddings (JSON rows)")
    s.add_argument("--source", required=True, choices=["twitch", "simulator", "db"],
                   help="twitch (--path watches.csv), simulator (built-in world), db (the event log)")
    s.add_argument("--path")
    s.add_argument("--holdout", type=float, default=0.2, help="latest share of user–stream interactions held out")
    s.add_argument("--epochs", type=int)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_evaluate_graph)

    s = sub.add_parser("evaluate-retrieval", help="whole-catalog retrieval of each test watch (JSON rows)")
    s.add_argument("--source", default="twitch", choices=["twitch"])
    s.add_argument("--train")
    s.add_argument("--test")
    s.add_argument("--path", help="one watches file, split by --split-slot")
    s.add_argument("--split-slot", type=int)
    s.add_argument("--live-only", action="store_true", help="rank over the streams live at t, not the catalog")
    s.add_argument("--models", help="comma-separated subset of the rows")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--epochs", type=int, default=8, help="two-tower epochs at most (early stopping)")
    s.set_defaults(func=cmd_evaluate_retrieval)

    s = sub.add_parser("evaluate-ope", help="off-policy value of a target policy from a logged one (JSON rows)")
    s.add_argument("--source", default="obd", choices=["obd"])
    s.add_argument("--logged", required=True, help="the logging policy's folder, e.g. obd/random/all")
    s.add_argument("--target", required=True, help="the target policy's folder (its log gives the on-policy value)")
    s.add_argument("--campaign", help="Bernoulli-TS prior's campaign (default: the target folder's name)")
    s.add_argument("--prior", help="a Bernoulli-TS prior file (JSON, or obp's prior_bts.yaml)")
    s.add_argument("--estimators", help="comma-separated subset of ips,snips,dm,dr,switch-dr")
    s.add_argument("--n-sim", type=int, default=100_000, help="Monte-Carlo slates of the target's distribution")
    s.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples of the CIs")
    s.add_argument("--seed", type=int, default=12345)
    s.add_argument("--plot", help="also write a PNG of the estimates and their CIs")
    s.set_defaults(func=cmd_evaluate_ope)

    s = sub.add_parser("position-curve", help="examination by slot from a log with positions (JSON rows + plot)")
    s.add_argument("--events", required=True, help="an events file (CSV or Parquet, the generic events format)")
    s.add_argument("--method", choices=["randomised", "em"], help="default: randomised when the log flags enough")
    s.add_argument("--max-position", type=int)
    s.add_argument("--bootstrap", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--plot", help="PNG path (default: next to the events file)")
    s.set_defaults(func=cmd_position_curve)

    s = sub.add_parser("report", help="the ranker's evolution V1 -> V4 + ablations, >= 3 seeds: docs/evolution.md + plots")
    s.add_argument("--source", choices=["twitch", "simulator"], required=True)
    s.add_argument("--path", help="twitch: the watches CSV")
    s.add_argument("--split-slot", type=int, default=4000)
    s.add_argument("--sim-seed", type=int, default=1, help="simulator: the world's seed")
    s.add_argument("--sim-days", type=float, default=7)
    s.add_argument("--seeds", default="0,1,2")
    s.add_argument("--ablations", help="comma-separated ranking.versions.OURS names (default: the task's list)")
    s.add_argument("--epochs", type=int, help="training epochs at most (early stopping); default: the harness's 4")
    s.add_argument("--max-train-rows", type=int, default=100_000, help="twitch: train candidate rows (subsampled)")
    s.add_argument("--out", default="docs/evolution.md")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("run", help="the whole job on the embedded default, then serve (make run)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--days", type=int)
    s.add_argument("--users", type=int)
    s.add_argument("--timeout", type=float, default=3600)
    s.add_argument("--api-workers", type=int, default=2)
    s.add_argument("--smoke", action="store_true", help="send one recommend request, print it and stop")
    s.set_defaults(func=cmd_run)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("feast").setLevel(logging.WARNING)     # "registry cache expired" every second
    return args.func(args) or 0


def run() -> None:
    """Console-script entry. Leaves with os._exit once output is flushed when DuckDB was loaded:
    its nanobind bindings otherwise print pages of "leaked instance" lines at interpreter exit."""
    rc = main()
    if "duckdb" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run()

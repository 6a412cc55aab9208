"""The graph job a Celery worker runs: event log → graph → Metapath2vec (warm-started from the
active version) → gate → artifact (graph.artifacts) → registry, idempotent per data version.
torch / torch_geometric are imported inside it only.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .artifacts import MODEL_NAME, load_active

log = logging.getLogger(__name__)


def _newest(events) -> Optional[str]:
    """ISO time of the newest event trained on (the next version's held-out window starts there)."""
    if events is None or not len(events):
        return None
    import pandas as pd
    return pd.Timestamp(events["ts"].max()).isoformat()


def _config_key(config) -> str:
    from dataclasses import asdict
    return hashlib.sha1(json.dumps(asdict(config), sort_keys=True, default=str).encode()).hexdigest()[:8]


def train_and_register_embeddings(settings, *, config=None, end: Optional[datetime] = None,
                                  window_days: Optional[float] = None, warm_start: bool = True,
                                  gate: bool = True, holdout_frac: float = 0.1, promote: bool = True,
                                  progress: bool = False) -> dict:
    r"""The graph job: train Metapath2vec embeddings on the event log and make them the active version.

    1. key = ``store.ingest.data_version`` (+ ``end`` / window / config fingerprint). When the
       registry already has ``metapath2vec`` trained on that key, return that row (no-op); two
       workers racing on one key are serialised by ``store.jobs.job_run``.
    2. events (``ts < end``, the last ``window_days`` when given) + catalog →
       :func:`graph.build.build_graph`.
    3. :func:`graph.metapath2vec.train_metapath2vec`, warm-started from the active version
       (ids that still exist keep their place in the space).
    4. ``gate`` (default): :func:`graph.gate.gate_embeddings` trains a candidate on the events
       before a held-out cut and scores it head to head with the active version on the new links
       after it; a candidate with a lower link AUC is registered but NOT promoted (the active
       keeps serving). One that passes is refit on all events (warm-started from the candidate).
    5. save to ``settings.artifact_dir / "embeddings" / <version>``, register (metrics = counts,
       loss, figures, ``trained_until``, ``holdout``, ``versus_active``, ``gate``) and promote
       when the gate passed.

    ``promote=False`` (the ranker's back-fill of a version before its training rows,
    ``ranking.graph_vectors``): registered with ``backfill: True``, never made active.

    Warm start only from a version trained before ``end``: one that has seen later events would
    carry them into a back-filled version (and into the ranker rows it feeds).

    Returns the registry row (``dict``: name, version, artifact_path, metrics, status,
    data_version, created_at) with ``"skipped": True`` when nothing was trained.
    """
    from store.ingest import data_version, load_catalog, load_events, training_key
    from store.jobs import job_run
    from store.registry import active_model, already_trained, register_model
    from store.registry import promote as make_active

    from .build import build_graph
    from .gate import GateResult, gate_embeddings
    from .metapath2vec import M2VConfig, train_metapath2vec

    t0 = time.perf_counter()
    config = config or M2VConfig()
    url = settings.database_url
    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    if window_days is not None:       # the window is relative to end: end matters even when it cuts nothing
        key = data_version(url) + (f"@{end.isoformat()}" if end is not None else "") + f"/{float(window_days):g}d"
    else:
        key = training_key(url, end)
    key += f"#{_config_key(config)}"
    done = already_trained(url, MODEL_NAME, key)
    if done is not None:
        log.info("train_and_register_embeddings: %s already trained (%s)", key, done["version"])
        return done
    with job_run(url, "train_graph_embeddings", key) as job:
        if job.skip:
            return already_trained(url, MODEL_NAME, key, job.detail)
        start = None
        if window_days is not None:
            from datetime import timedelta
            start = (end or datetime.now(timezone.utc)) - timedelta(days=float(window_days))
        events = load_events(url, start=start, end=end, types=["watch", "click", "item_click", "purchase"])
        catalog = load_catalog(url)
        graph = build_graph(events, catalog)
        import pandas as pd
        active = load_active(url)
        previous = active if warm_start else None
        if previous is not None and end is not None:
            seen = (active_model(url, MODEL_NAME) or {}).get("metrics", {}).get("trained_until")
            if seen is not None and pd.Timestamp(seen) >= pd.Timestamp(end):
                log.info("train_and_register_embeddings: active version saw events up to %s >= end %s; cold start",
                         seen, end)
                previous = None
        if previous is not None and previous.dim != config.dim:
            log.info("train_and_register_embeddings: active version has dim %d != %d; cold start",
                     previous.dim, config.dim)
            previous = None
        if gate and active is not None and promote:
            verdict = gate_embeddings(events, catalog, config, active_model(url, MODEL_NAME), active,
                                      warm_start=previous, holdout_frac=holdout_frac)
        else:
            verdict = GateResult(True, "gate off" if not gate else ("back-fill" if not promote else "no active version"))
        log.info("train_and_register_embeddings: gate %s: %s", "passed" if verdict.passed else "FAILED", verdict.why)
        if verdict.passed:           # the served version is refit on everything (warm start: the candidate)
            emb = train_metapath2vec(graph, config, warm_start=verdict.candidate or previous)
        else:                        # kept for inspection, never served: the candidate itself
            emb = verdict.candidate
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{stamp}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        emb.meta.update({"version": version, "data_version": key,
                         "warm_start_from": previous.meta.get("version") if previous is not None else None})
        path = Path(settings.artifact_dir) / "embeddings" / version
        emb.save(path)
        train = emb.meta.get("train", {})
        metrics = {"nodes": graph.counts["nodes"], "edges": graph.counts["num_edges"],
                   "events": graph.counts["events"], "dim": emb.dim,
                   "loss": train.get("final_loss"), "epoch_seconds": train.get("epoch_seconds"),
                   "walks_per_s": train.get("walks_per_s"), "untrained": train.get("untrained"),
                   "warm_start_from": emb.meta["warm_start_from"],
                   "trained_until": _newest(events), "gate": {"passed": verdict.passed, "why": verdict.why},
                   "backfill": not promote, **verdict.metrics, "seconds": round(time.perf_counter() - t0, 2)}
        job.check()                   # the lease is still ours: publish
        row = register_model(url, MODEL_NAME, version, str(path), metrics=metrics, data_version=key)
        if verdict.passed and promote:
            row = make_active(url, MODEL_NAME, version)
        job.detail.update({"version": version, "artifact_path": str(path)})
        msg = (f"metapath2vec {version}: {graph.counts['num_edges']} edges, {sum(graph.num_nodes.values())} nodes, "
               f"{metrics['seconds']}s (warm start from {metrics['warm_start_from']}); "
               f"{'promoted' if verdict.passed and promote else 'NOT promoted'}: {verdict.why}")
        log.info(msg)
        if progress:
            print(msg, flush=True)
    return dict(row, skipped=False)


__all__ = ["train_and_register_embeddings"]

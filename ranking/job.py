"""The ranker's registry job (the worker's ``train_ranker``).

:func:`train_and_register_ranker`: event log → labels → point-in-time Feast features with their
list columns → time split → inputs (vocabularies, GBDT leaves of the active V1, the graph job's
Metapath2vec versions, each row the newest trained before it: ranking.graph_vectors) → fit (ranking.train) →
metrics + HTML report (ranking.evaluate) → artifact (ranking.artifacts) → registry; promoted only
when, scored on the same validation rows, no promotion metric is worse than the active ranker's
(ranking.promotion).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .artifacts import MODEL_NAME, save_ranker
from .graph_vectors import point_in_time_versions
from .promotion import head_to_head
from .train import TrainConfig, train_on_frames

log = logging.getLogger(__name__)

EARLY_STOP_FRAC = 0.15


def train_and_register_ranker(settings, *, end: Optional[datetime] = None, valid_frac: float = 0.2,
                              ranker_overrides: Optional[dict] = None, train_config: Optional[TrainConfig] = None,
                              position_curve: Optional[str] = None, progress: bool = False) -> dict:
    """Train the ranker on the event log (up to ``end``), evaluate it, register it; idempotent per
    data version (+ config). Uses the active ``gbdt`` (leaf inputs) and, when a graph version is
    active, the graph job's versions point in time (:func:`point_in_time_versions`: each row the
    newest version trained before it, one back-filled when none precedes the rows). Promotion: when no ranker is active or, with the active version scored on the same
    validation rows (:func:`head_to_head`), no promotion metric is worse. Returns the registry
    row (+ ``report`` path). ``position_curve="randomised"`` with a ``"table"`` Biasnet
    (``ranker_overrides``): the tower's fixed curve is read off the training period's randomised
    requests (:func:`randomised_curve`; the harvested curve when there are too few of them)."""
    from feature_repo.features import FEATURE_COLUMNS
    from store.ingest import load_catalog, load_events, training_key
    from store.jobs import job_run
    from store.registry import active_model, already_trained, promote, register_model
    from store.sources import TRUTH_FILE

    from .evaluate import evaluate_ranker, write_report
    from .gbdt import MODEL_NAME as GBDT_NAME
    from .gbdt import GBDTModel, time_split
    from .samples import impression_labels, training_frame

    t0 = time.perf_counter()
    url = settings.database_url
    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    cfg = train_config or TrainConfig(threads=2)
    item_vectors = None
    vectors_file = getattr(settings, "item_vectors", "")
    if vectors_file:                      # read first: a bad file fails the job before any training
        from .item_vectors import read_item_vectors
        item_vectors = read_item_vectors(vectors_file)
        vectors_file = [str(vectors_file), hashlib.sha1(item_vectors[1].tobytes()).hexdigest()[:8]]
    fusion = getattr(settings, "fusion", "fixed")
    fusion_cfg = None
    if fusion != "fixed":
        from .fusion import FusionConfig
        fusion_cfg = FusionConfig(utility=settings.fusion_utility_weights, personalised=fusion == "personalised",
                                  seed=cfg.seed)
    fingerprint = hashlib.sha1(json.dumps([asdict(cfg), ranker_overrides or {}, position_curve]
                                          + ([asdict(fusion_cfg)] if fusion_cfg else [])
                                          + ([vectors_file] if vectors_file else []), sort_keys=True,
                                          default=str).encode()).hexdigest()[:8]
    key = training_key(url, end) + f"#{fingerprint}"
    done = already_trained(url, MODEL_NAME, key)
    if done is not None:
        log.info("train_and_register_ranker: %s already trained (%s)", key, done["version"])
        return done
    with job_run(url, "train_ranker", key) as job:
        if job.skip:
            return already_trained(url, MODEL_NAME, key, job.detail)
        events = load_events(url, end=end)
        catalog = load_catalog(url)
        labels_df = impression_labels(events, catalog.get("streams"))
        if len(labels_df) < 10 or labels_df["click"].nunique() < 2:
            raise ValueError(f"not enough impressions with both classes to train ({len(labels_df)} impressions)")
        frame = training_frame(settings, labels_df, progress=progress, lists=True)
        train, valid = time_split(frame, valid_frac)
        fit_df, stop_df = time_split(train, EARLY_STOP_FRAC)      # early stopping inside the train period
        gbdt_row = active_model(url, GBDT_NAME)
        gbdt = GBDTModel.load(gbdt_row["artifact_path"]) if gbdt_row else None
        versions = point_in_time_versions(settings, fit_df, progress=progress)
        graph_rows = None
        if versions is not None:                # point-in-time vectors: rank only the rows a version precedes
            fit_df = fit_df[versions.index_at(fit_df["ts"]) >= 0].reset_index(drop=True)
            graph_rows = {"fit": versions.counts(fit_df["ts"]), "stop": versions.counts(stop_df["ts"]),
                          "valid": versions.counts(valid["ts"]),
                          "trained_until": dict(zip(versions.versions,
                                                    [pd_ts(u) for u in versions.until]))}
        overrides = dict(ranker_overrides or {})
        fixed_curve = None
        if position_curve == "randomised":
            train_end = train["ts"].max() if len(train) else None
            fixed_curve = randomised_curve(events[events["ts"] <= train_end] if train_end is not None else events)
        elif position_curve is not None:
            raise ValueError(f"position_curve must be None or 'randomised', got {position_curve!r}")
        model, inputs, history = train_on_frames(
            fit_df, stop_df, list(FEATURE_COLUMNS), catalog=catalog, graph_versions=versions, gbdt=gbdt,
            item_vectors=item_vectors,
            ranker_overrides=overrides, train_config=cfg, extra_frames=[valid], progress=progress,
            position_frame=train,         # a harvested curve ("table" Biasnet) reads the whole training period
            position_curve=fixed_curve)
        truth_path = Path(settings.artifact_dir) / TRUTH_FILE
        truth = None
        if truth_path.exists():
            import pandas as pd
            truth = pd.read_parquet(truth_path)
        harvested = None
        if model.biasnet is not None:           # a model-free cross-check of the learned curve
            from .position_bias import harvest_from_frame
            harvested = harvest_from_frame(train, inputs.pages, n_positions=model.config.n_positions,
                                           n_pages=model.config.n_pages)
        from .evaluate import outputs
        out = outputs(model, inputs, valid)
        metrics = evaluate_ranker(model, inputs, valid, truth=truth, harvested=harvested, out=out)
        # the offline value of the new ranking from the randomised requests of the validation window
        # (ope.page_value: item-position IPS; None when there are too few of them)
        metrics["offline_value"] = _offline_value(valid, out["ctr_logit"])
        if "position_curve_learned_vs_harvested" in metrics:
            log.info("position curve: learned vs harvested from the log (no relevance model) differ by at most "
                     "%.3f (a large gap: the tower absorbed part of the logging policy's ordering)",
                     metrics["position_curve_learned_vs_harvested"])
        metrics.update({"n_train": int(len(fit_df)), "n_stop": int(len(stop_df)), "n_valid": int(len(valid)),
                        "gbdt_version": (gbdt_row or {}).get("version"),
                        "graph_versions": graph_rows,
                        "graph_version": (versions.versions[-1] if versions is not None else None),
                        "train_seconds": round(time.perf_counter() - t0, 2)})
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{stamp}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        path = Path(settings.artifact_dir) / "models" / MODEL_NAME / version
        if fusion_cfg is not None:              # the ranker frozen: its task scores' weights from the logged utility
            from .fusion import fit_for_ranker, save_fusion
            net, fhist = fit_for_ranker(model, inputs, fit_df, stop_df, fusion_cfg, progress=progress)
            metrics["fusion"] = {"kind": fusion, "utility": fusion_cfg.utility, "weights": fhist["weights"],
                                 "stop_loss_fixed": fhist["initial_stop_loss"], "stop_loss": fhist["best_stop_loss"]}
        save_ranker(model, inputs, path, history=history, metrics=metrics)
        if fusion_cfg is not None:
            save_fusion(net, path, config=fusion_cfg)
        report = write_report(path / "report", model, inputs, valid, history, metrics, truth=truth)
        current = active_model(url, MODEL_NAME)
        ok, why, versus = head_to_head(metrics, valid, current)
        metrics["versus_active"] = versus
        job.check()                   # the lease is still ours: publish
        row = register_model(url, MODEL_NAME, version, str(path), metrics=metrics, data_version=key)
        if ok:
            row = promote(url, MODEL_NAME, version)
        log.info("ranker %s %s: %s", version, "promoted" if ok else "registered, NOT promoted", why)
        ov = metrics.get("offline_value") or {}
        msg = (f"ranker {version}: valid auc {metrics.get('auc')} gauc {metrics.get('gauc')} "
               f"cvr auc {metrics.get('cvr_auc_all')} stay rmse {metrics.get('stay_rmse')} "
               + (f"offline value {ov['estimate']:.4f} clicks / randomised top {ov['k_mean']:.0f} "
                  f"[{ov['ci_low']:.4f}, {ov['ci_high']:.4f}] vs their random order {ov['logged']:.4f} "
                  f"(active {(versus or {}).get('offline_value')}, {ov['requests']} requests) " if ov else "")
               + f"(oracle {metrics.get('oracle_auc')}) n={metrics.get('n')} in {time.perf_counter() - t0:.1f}s; "
               f"report {report}")
        log.info(msg)
        if progress:
            print(msg, flush=True)
        return dict(row, report=str(report))


def pd_ts(ns: int) -> str:
    import pandas as pd
    return pd.Timestamp(int(ns), tz="UTC").isoformat()


def randomised_curve(events, max_position: int = 10):
    """Examination by slot (relative to slot 1) from the randomised requests of ``events``
    (ope.position_curve's ratio estimator), or None with fewer than ope.position_curve.MIN_RANDOMISED."""
    from ope.position_curve import MIN_RANDOMISED, impressions_with_clicks, position_curve
    try:
        imps = impressions_with_clicks(events)
    except ValueError:
        return None
    n = imps.loc[imps["policy"] == "randomised", "request_id"].nunique()
    if n < MIN_RANDOMISED:
        log.warning("%d randomised requests (< %d): the position curve is harvested instead", n, MIN_RANDOMISED)
        return None
    _, rows = position_curve(imps, method="randomised", max_position=max_position, n_boot=0)
    curve = [r["examination"] if r["examination"] is not None else float("nan") for r in rows]
    log.info("position curve from %d randomised requests: %s", n, [round(c, 3) for c in curve])
    return curve


def _offline_value(frame, scores):
    from ope.page_value import page_value
    try:
        return page_value(frame, scores)
    except Exception as exc:                 # a report field: never the reason a job fails
        log.warning("offline value not computed: %s: %s", type(exc).__name__, exc)
        return None


__all__ = ["EARLY_STOP_FRAC", "train_and_register_ranker"]

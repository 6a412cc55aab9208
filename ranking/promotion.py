"""The ranker's promotion rule: a new version replaces the active one only when it is not worse on the same rows."""
from __future__ import annotations

import logging
from typing import Optional

from .artifacts import load_ranker

log = logging.getLogger(__name__)

PROMOTION_METRICS = ("auc", "cvr_auc_all")      # higher is better; compared with the active version's


def should_promote(new_metrics: dict, current: Optional[dict]) -> tuple[bool, str]:
    """Promote when nothing is active, or when no validation metric of PROMOTION_METRICS that both
    versions report is worse than the active version's (the registry keeps both either way)."""
    if current is None:
        return True, "no active ranker"
    cur = current.get("metrics") or {}
    worse = [f"{k} {new_metrics.get(k)} < {cur.get(k)}" for k in PROMOTION_METRICS
             if new_metrics.get(k) is not None and cur.get(k) is not None and new_metrics[k] < cur[k]]
    if new_metrics.get("auc") is None:
        return False, "no validation auc"
    if worse:
        return False, "worse than active " + str(current.get("version")) + ": " + ", ".join(worse)
    return True, f"not worse than active {current.get('version')}"


def head_to_head(metrics: dict, valid, current: Optional[dict]) -> tuple[bool, str, Optional[dict]]:
    """The promotion gate with both versions on the SAME rows: the active version is scored on the
    new version's validation window (``metrics`` are the new one's there) and
    :func:`should_promote` compares the two. (Each version's stored metrics come from its own,
    older window.) An active version that cannot be loaded or scored is replaced. Returns
    (promote, why, the active version's metrics on these rows)."""
    from .evaluate import evaluate_ranker
    if current is None:
        return True, "no active ranker", None
    try:
        from .evaluate import outputs
        model, inputs, _ = load_ranker(current["artifact_path"])
        out = outputs(model, inputs, valid)
        same = evaluate_ranker(model, inputs, valid, out=out)
    except Exception as exc:
        log.warning("active ranker %s cannot be scored on the new window: %s", current.get("version"), exc)
        return True, f"active {current.get('version')} cannot be scored ({type(exc).__name__})", None
    versus = {"version": current.get("version"), "n": int(len(valid)),
              **{k: same.get(k) for k in PROMOTION_METRICS}, "offline_value": _offline_value(valid, out["ctr_logit"])}
    ok, why = should_promote(metrics, {"version": current.get("version"), "metrics": same})
    return ok, why + f" (both on the same {len(valid)} rows)", versus


def _offline_value(frame, scores):
    """The active version's value on the same randomised requests (ope.page_value), for the report."""
    from ope.page_value import page_value
    try:
        v = page_value(frame, scores)
    except Exception as exc:
        log.warning("offline value of the active ranker not computed: %s", exc)
        return None
    return None if v is None else round(v["estimate"], 5)


__all__ = ["PROMOTION_METRICS", "should_promote", "head_to_head"]

"""The ranker's objective terms and their fixed fusion — one definition for serving
(:mod:`ranking.scorer`) and for the personalised fusion network (:mod:`ranking.fusion`). numpy only.

Per candidate, the task terms are ``log pCTR``, ``log pCVR`` and ``log(1 + stay seconds)``; the
fixed fusion is their weighted sum (the weighted product pCTR^w_ctr · pCVR^w_cvr · (1 + stay)^w_stay).
"""
from __future__ import annotations

import numpy as np

DEFAULT_FUSION = {"default": {"ctr": 1.0, "cvr": 0.3, "stay": 0.2}}
PROB_EPS = 1e-7


def task_terms(p_ctr, p_cvr=None, stay_s=None) -> dict:
    """{task: [N] term} for the tasks given: log pCTR, log pCVR (clipped at PROB_EPS), log1p stay s (≥ 0)."""
    terms = {"ctr": np.log(np.clip(np.asarray(p_ctr, dtype=float), PROB_EPS, 1.0))}
    if p_cvr is not None:
        terms["cvr"] = np.log(np.clip(np.asarray(p_cvr, dtype=float), PROB_EPS, 1.0))
    if stay_s is not None:
        terms["stay"] = np.log1p(np.maximum(np.asarray(stay_s, dtype=float), 0.0))
    return terms


def fuse(outputs: dict, weights: dict) -> np.ndarray:
    """Weighted sum of the task terms (monotone in each task); tasks the outputs lack are skipped."""
    terms = task_terms(outputs["p_ctr"], outputs.get("p_cvr") if weights.get("cvr") else None,
                       outputs.get("stay_s") if weights.get("stay") else None)
    score = float(weights.get("ctr", 1.0)) * terms["ctr"]
    for task in ("cvr", "stay"):
        if task in terms:
            score = score + float(weights[task]) * terms[task]
    return score


__all__ = ["DEFAULT_FUSION", "PROB_EPS", "task_terms", "fuse"]

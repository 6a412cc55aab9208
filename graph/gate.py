r"""The promotion gate of an embedding version: held-out link AUC, head to head with the active one.

The graph job (:func:`graph.job.train_and_register_embeddings`) cannot score the version it
serves on links it trained on, so it validates first and refits after:

1. **cut.** The held-out window starts at the active version's ``trained_until`` (the newest event
   it saw: the links after it are new to both) when that window holds at least
   :data:`MIN_POSITIVES` new links; otherwise at the ``1 - holdout_frac`` quantile of the
   interactions (:func:`graph.evaluate.time_cut`) — then the active version may have seen part
   of the window, which favours it: the gate errs on the side of keeping it.
2. **task.** :func:`graph.evaluate.make_task` on the graph before the cut: new (user, stream)
   links after it, ``num_negatives`` sampled streams per link.
3. **candidate.** Metapath2vec trained on the graph before the cut (warm-started as the served
   one is: from the active version), scored by :math:`z_u^\top z_s`.
4. **active.** The active version's vectors of the same users and streams, looked up by their
   original ids (fallback vectors for ids it does not know), on the same task.
5. The candidate passes when its pooled AUC is not below the active's. The version that is
   served is then refit on all events, warm-started from the candidate (same config).

No active version (the first run: no extra training), too few held-out links (a new shop, a
short window) or an active version that cannot score: nothing to compare, the version passes
and the registry says why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MIN_POSITIVES = 20        # new links in the held-out window below which the gate cannot judge


@dataclass
class GateResult:
    """What the gate decided and on what.

    Attributes:
        passed (bool): the candidate may replace the active version.
        why (str): one line for the log and the registry.
        candidate (Embeddings, optional): the model trained before the cut (warm start of the refit).
        metrics (dict): ``holdout`` (the candidate's link metrics and the split) and
            ``versus_active`` (``{version, n, auc, active_auc, cut, unseen_by_active}``) when compared.
    """
    passed: bool
    why: str
    candidate: Optional[object] = None
    metrics: dict = field(default_factory=dict)


def _dot(emb, graph, users: np.ndarray, streams: np.ndarray) -> np.ndarray:
    """Scores of contiguous ``graph`` rows under ``emb`` (looked up by original id)."""
    zu = emb.lookup("user", graph.id_maps["user"][users])
    zs = emb.lookup("stream", graph.id_maps["stream"][streams])
    return np.einsum("nd,nd->n", zu, zs)


def choose_cut(events: pd.DataFrame, catalog, active_row: Optional[dict], holdout_frac: float,
               num_negatives: int, seed: int):
    """(cut, graph before it, task, unseen_by_active) — steps 1 and 2 of the module docstring."""
    from .build import build_graph
    from .evaluate import make_task, time_cut
    tried = []
    since = ((active_row or {}).get("metrics") or {}).get("trained_until")
    if since is not None:
        tried.append((pd.Timestamp(since), True))
    tried.append((time_cut(events, holdout_frac), False))
    for cut, unseen in tried:
        if cut.tzinfo is None:
            cut = cut.tz_localize("UTC")
        graph = build_graph(events, catalog, end=cut)
        task = make_task(events, graph, cut, num_negatives=num_negatives, seed=seed)
        if len(task.users) >= MIN_POSITIVES or not unseen:
            return cut, graph, task, unseen
    raise AssertionError("unreachable")


def gate_embeddings(events: pd.DataFrame, catalog, config, active_row: Optional[dict], active_emb, *,
                    warm_start=None, holdout_frac: float = 0.1, num_negatives: int = 50, seed: int = 0) -> GateResult:
    """Steps 1–5 of the module docstring (the refit is the caller's). ``active_emb``: the active
    version's Embeddings (None: nothing to defend, passes without training); ``warm_start``: the
    candidate's initialisation (the caller's choice, as for the served version)."""
    if active_emb is None:
        return GateResult(True, "no active version")
    from .evaluate import score_task, time_cut
    from .metapath2vec import train_metapath2vec
    try:
        time_cut(events, holdout_frac)
    except Exception as exc:                 # no interactions at all
        return GateResult(True, f"no held-out window ({type(exc).__name__}: {exc})")
    cut, graph, task, unseen = choose_cut(events, catalog, active_row, holdout_frac, num_negatives, seed)
    n = int(len(task.users))
    if n < MIN_POSITIVES:
        return GateResult(True, f"only {n} new links after {cut.isoformat()} (< {MIN_POSITIVES}): not gated",
                          metrics={"holdout": {"cut": cut.isoformat(), "n": n}})
    candidate = train_metapath2vec(graph, config, warm_start=warm_start)
    mine = score_task(task, lambda u, s: _dot(candidate, graph, u, s))
    metrics = {"holdout": dict(mine, cut=cut.isoformat(),
                               untrained=candidate.meta.get("train", {}).get("untrained"))}
    try:
        theirs = score_task(task, lambda u, s: _dot(active_emb, graph, u, s))
    except Exception as exc:                 # an active version that cannot score: nothing to defend
        return GateResult(True, f"active {active_row.get('version')} cannot score ({type(exc).__name__})",
                          candidate, metrics)
    metrics["versus_active"] = {"version": active_row.get("version"), "n": n, "auc": mine["auc"],
                                "active_auc": theirs["auc"], "mrr": mine["mrr"], "active_mrr": theirs["mrr"],
                                "cut": cut.isoformat(), "unseen_by_active": unseen}
    where = f"on the same {n} held-out links after {cut.isoformat()}"
    if not np.isfinite(mine["auc"]):
        return GateResult(False, "no held-out auc", candidate, metrics)
    if np.isfinite(theirs["auc"]) and mine["auc"] < theirs["auc"]:
        return GateResult(False, f"link auc {mine['auc']:.4f} < active's {theirs['auc']:.4f} {where}",
                          candidate, metrics)
    return GateResult(True, f"link auc {mine['auc']:.4f} >= active's {theirs['auc']:.4f} {where}",
                      candidate, metrics)


__all__ = ["GateResult", "gate_embeddings", "choose_cut", "MIN_POSITIVES"]

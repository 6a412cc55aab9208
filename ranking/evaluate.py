"""Evaluation of the transformer ranker: metrics per task, the position curve, an HTML report.

Metrics (:func:`evaluate_ranker`, on impressions the model never trained on):

- click: ``auc`` / ``gauc`` (per user) of the DEBIASED click score (what serving ranks by),
  ``auc_biased`` and ``logloss`` of the training-form probability σ(ctr + Biasnet) — the one that
  models the observed clicks, so the one whose calibration means something;
- conversion (ESMM): ``cvr_auc_clicked`` = AUC of pCVR against purchases among clicked impressions,
  ``cvr_auc_all`` = AUC of the debiased pCTCVR against purchases on all impressions;
- stay: ``stay_rmse`` of the log1p-seconds prediction on clicked impressions;
- with the simulator's truth (per impression: relevance, examination, p_click):
  ``oracle_auc`` (the true p_click), ``position_curve`` (learned vs true examination relative to
  position 1, positions 1..K) with ``position_curve_max_err``; the same tower read on each slot's
  own impressions (``learned_shown`` in the curve, ``position_curve_max_err_shown``; see
  :func:`~ranking.model.ranker.position_curve_shown` — for the additive form the two readouts
  differ, for PAL's they are equal); and ``ndcg@10_true`` — per request,
  the slate re-ranked by the debiased score, gains = the TRUE relevance (so a model that learned
  position instead of relevance is penalised);
- with a curve harvested from the training log (``harvested``, :mod:`ranking.position_bias`; no
  truth needed, so it works on real data): ``position_curve_check`` (the learned curve, read on each
  slot's own impressions when the frame has positions, next to the harvested one) and
  ``position_curve_learned_vs_harvested`` (their max abs difference). The
  harvested curve needs no relevance model, so a large gap says the learned tower absorbed part
  of the logging policy's ordering (README, "The transformer ranker"); with the truth also
  ``position_curve_harvested_max_err``.

:func:`write_report` writes ``index.html`` with PNG plots: loss curves, calibration per task,
the position curve against the truth and / or the harvested one (when known), and the metrics
table.
"""
from __future__ import annotations

import html
import json
import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .metrics import auc, gauc, logloss

log = logging.getLogger(__name__)

CURVE_POSITIONS = 10


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _r(v, digits=5):
    if v is None:
        return None
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else round(float(v), digits)
    return v


def ndcg_at_k(groups, score, gain, k: int = 10) -> float:
    """Mean over groups of DCG@k(order by score) / DCG@k(order by gain); gains ≥ 0, log2 discount.
    Groups whose ideal DCG is 0 are skipped. Ties in score keep the input order (stable sort)."""
    g = pd.DataFrame({"g": np.asarray(groups), "s": np.asarray(score, dtype=float),
                      "r": np.asarray(gain, dtype=float), "i": np.arange(len(score))})
    vals = []
    for _, grp in g.groupby("g", sort=False):
        r = grp["r"].to_numpy()
        by_s = r[np.lexsort((grp["i"].to_numpy(), -grp["s"].to_numpy()))][:k]
        ideal = np.sort(r)[::-1][:k]
        disc = 1.0 / np.log2(np.arange(2, len(by_s) + 2))
        idcg = float(ideal @ disc[:len(ideal)])
        if idcg > 0:
            vals.append(float(by_s @ disc[:len(by_s)]) / idcg)
    return float(np.mean(vals)) if vals else float("nan")


def learned_position_curve(model, ctr_logits: np.ndarray, positions=range(1, CURVE_POSITIONS + 1),
                           page: Optional[int] = None) -> np.ndarray:
    """mean_i σ(a_i + b_k) / mean_i σ(a_i + b_1) for the given impressions' debiased logits a_i
    (b = Biasnet's logits on ``page``, the page index the impressions were shown on)."""
    import torch
    from .model.ranker import position_curve
    with torch.no_grad():
        c = position_curve(model, torch.as_tensor(np.asarray(ctr_logits), dtype=torch.float32),
                           positions=list(positions), page=page)
    return np.asarray(c, dtype=np.float64)


def learned_position_curve_shown(model, ctr_logits: np.ndarray, shown: np.ndarray,
                                 positions=range(1, CURVE_POSITIONS + 1), page: Optional[int] = None) -> np.ndarray:
    """The curve read on each slot's own impressions (``shown``: the impressions' slots; see
    :func:`~ranking.model.ranker.position_curve_shown`); a slot with no impression falls back to
    :func:`learned_position_curve` (the one-population readout)."""
    import torch
    from .model.ranker import position_curve_shown
    positions = list(positions)
    shown = np.nan_to_num(np.asarray(pd.to_numeric(pd.Series(shown), errors="coerce"), dtype=float)).astype(np.int64)
    with torch.no_grad():
        c = position_curve_shown(model, torch.as_tensor(np.asarray(ctr_logits), dtype=torch.float32),
                                 torch.as_tensor(shown), positions=positions, page=page)
    c = np.asarray(c, dtype=np.float64)
    if np.isnan(c).any():
        c = np.where(np.isnan(c), learned_position_curve(model, ctr_logits, positions, page), c)
    return c


def outputs(model, inputs, frame: pd.DataFrame, batch_size: int = 8192) -> dict:
    """Debiased and training-form outputs for the rows of ``frame`` (numpy)."""
    from .batches import predict_batches
    x = inputs.transform(frame)
    out = predict_batches(model, x, with_bias=True, batch_size=batch_size)
    res = {"ctr_logit": out["ctr_logit"].astype(np.float64)}
    res["p_ctr"] = _sigmoid(res["ctr_logit"])
    if "bias_logit" in out:
        import torch
        from .model.ranker import biased_click_logit
        z = biased_click_logit(torch.as_tensor(res["ctr_logit"]), torch.as_tensor(out["bias_logit"], dtype=torch.float64),
                               model.config.bias_form)
        res["p_ctr_biased"] = _sigmoid(z.numpy())
    else:
        res["p_ctr_biased"] = res["p_ctr"]
    if "cvr_logit" in out:
        res["p_cvr"] = _sigmoid(out["cvr_logit"])
        res["p_ctcvr"] = res["p_ctr"] * res["p_cvr"]
        res["p_ctcvr_biased"] = res["p_ctr_biased"] * res["p_cvr"]
    if "stay" in out:
        res["stay"] = out["stay"].astype(np.float64)
    return res


def evaluate_ranker(model, inputs, frame: pd.DataFrame, *, truth: Optional[pd.DataFrame] = None,
                    out: Optional[dict] = None, harvested=None) -> dict:
    """Validation metrics of one trained ranker on ``frame`` (labels + features + lists);
    ``harvested``: a :class:`~ranking.position_bias.HarvestedCurve` of the training period."""
    if out is None:
        out = outputs(model, inputs, frame)
    y = frame["click"].to_numpy()
    users = frame["user_id"].to_numpy()
    m = {"n": int(len(frame)), "positive_rate": float(np.mean(y)) if len(y) else float("nan"),
         "auc": auc(y, out["p_ctr"]), "gauc": gauc(y, out["p_ctr"], users),
         "auc_biased": auc(y, out["p_ctr_biased"]), "logloss": logloss(y, out["p_ctr_biased"])}
    if "p_cvr" in out and "purchase" in frame:
        b = frame["purchase"].to_numpy()
        clicked = y > 0
        m["cvr_auc_clicked"] = auc(b[clicked], out["p_cvr"][clicked]) if clicked.any() else float("nan")
        m["cvr_auc_all"] = auc(b, out["p_ctcvr"])
        m["ctcvr_logloss"] = logloss(b, out["p_ctcvr_biased"])
        m["purchase_rate"] = float(np.mean(b)) if len(b) else float("nan")
    if "stay" in out and "stay_s" in frame:
        clicked = y > 0
        if clicked.any():
            t = np.log1p(np.maximum(frame["stay_s"].to_numpy(dtype=float)[clicked], 0))
            m["stay_rmse"] = float(np.sqrt(np.mean((out["stay"][clicked] - t) ** 2)))
            m["stay_rmse_mean_baseline"] = float(np.sqrt(np.mean((t - t.mean()) ** 2)))
    if truth is not None and len(truth) and "event_id" in frame:
        t = truth.drop_duplicates("event_id").set_index(truth["event_id"].drop_duplicates().astype(str))
        ids = frame["event_id"].astype(str)
        hit = ids.isin(t.index).to_numpy()
        if hit.any():
            tt = t.loc[ids[hit]]
            m["oracle_auc"] = auc(y[hit], tt["p_click"].to_numpy(dtype=float))
            m["oracle_n"] = int(hit.sum())
            if "relevance" in tt and "request_id" in frame:
                groups = frame["request_id"].to_numpy()[hit]
                m["ndcg@10_true"] = ndcg_at_k(groups, out["p_ctr"][hit], tt["relevance"].to_numpy(dtype=float))
                m["ndcg@10_true_oracle"] = ndcg_at_k(groups, tt["relevance"].to_numpy(dtype=float),
                                                     tt["relevance"].to_numpy(dtype=float))
            if getattr(model, "biasnet", None) is not None and "examination" in tt and "position" in frame:
                pos = pd.to_numeric(frame["position"], errors="coerce").to_numpy()[hit]
                ex = pd.Series(tt["examination"].to_numpy(dtype=float)).groupby(pos).mean()
                ks = [k for k in range(1, CURVE_POSITIONS + 1) if k in ex.index]
                if ks and ks[0] == 1:
                    page = _main_page(inputs, frame)
                    learned = learned_position_curve(model, out["ctr_logit"][hit], positions=ks, page=page)
                    true = ex.loc[ks].to_numpy() / ex.loc[1]
                    m["position_curve"] = {"positions": ks, "learned": [round(float(v), 4) for v in learned],
                                           "true": [round(float(v), 4) for v in true]}
                    m["position_curve_max_err"] = float(np.max(np.abs(learned - true)))
                    shown = learned_position_curve_shown(model, out["ctr_logit"][hit], pos, positions=ks, page=page)
                    m["position_curve"]["learned_shown"] = [round(float(v), 4) for v in shown]
                    m["position_curve_max_err_shown"] = float(np.max(np.abs(shown - true)))
    if harvested is not None and getattr(model, "biasnet", None) is not None and len(frame):
        page = _main_page(inputs, frame)
        ks = list(range(1, min(CURVE_POSITIONS, harvested.max_position) + 1))
        # the learned curve read on each slot's own impressions where the slots are known: like the
        # harvested curve, it is then exam(k) / exam(1) when the relevance is right, in either form
        # (the one-population readout of an additive tower is not; README, "The transformer ranker")
        readout = "shown" if "position" in frame else "population"
        if readout == "shown":
            learned = learned_position_curve_shown(model, out["ctr_logit"], frame["position"].to_numpy(), ks, page)
        else:
            learned = np.asarray(learned_position_curve(model, out["ctr_logit"], positions=ks, page=page), dtype=float)
        h = harvested.curve(page or 0)[:len(ks)]                                     # slot k at h[k - 1]
        m["position_curve_check"] = {"positions": ks, "learned": [round(float(v), 4) for v in learned],
                                     "harvested": [round(float(v), 4) for v in h], "readout": readout}
        m["position_curve_learned_vs_harvested"] = float(np.max(np.abs(learned - h)))
        curve = m.get("position_curve")
        if curve is not None:             # its slots: sorted from 1, so those <= max_position lead
            true = {k: t for k, t in zip(curve["positions"], curve["true"]) if k <= ks[-1]}
            hv = np.asarray([h[k - 1] for k in true], dtype=float)
            curve["harvested"] = [round(float(v), 4) for v in hv]
            m["position_curve_harvested_max_err"] = float(np.max(np.abs(hv - np.asarray(list(true.values())))))
    return {k: (_r(v) if not isinstance(v, dict) else v) for k, v in m.items()}


def _main_page(inputs, frame: pd.DataFrame) -> Optional[int]:
    """The most common page index of ``frame`` (the page the position curves are read on)."""
    pages = inputs.transform(frame.iloc[:1000])["page"]
    return int(np.bincount(pages).argmax()) if len(pages) else None


# ----------------------------------------------------------------------------- report
def _calibration(ax, y, p, title, bins=10):
    y, p = np.asarray(y, float), np.asarray(p, float)
    if len(p) == 0:
        return
    q = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(q, p, side="right") - 1, 0, max(len(q) - 2, 0))
    mp = [p[idx == b].mean() for b in range(len(q) - 1) if (idx == b).any()]
    my = [y[idx == b].mean() for b in range(len(q) - 1) if (idx == b).any()]
    ax.plot(mp, my, "o-", label="model")
    lim = max(max(mp + my, default=0.0), 1e-6)
    ax.plot([0, lim], [0, lim], "--", color="grey", label="ideal")
    ax.set_title(title)
    ax.set_xlabel("predicted")
    ax.set_ylabel("observed")
    ax.legend()


def write_report(directory, model, inputs, frame: pd.DataFrame, history: dict, metrics: dict, *,
                 truth: Optional[pd.DataFrame] = None, title: str = "StreamRank ranker") -> Path:
    """``directory/index.html`` + PNGs (loss curves, calibration per task, position curve)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    figs = []
    eps = history.get("epochs", []) if history else []
    if eps:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [e["epoch"] for e in eps]
        ax.plot(xs, [e["train"]["total"] for e in eps], "o-", label="train")
        if "valid" in eps[0]:
            ax.plot(xs, [e["valid"]["total"] for e in eps], "o-", label="validation (early stopping)")
        if history.get("best_epoch"):
            ax.axvline(history["best_epoch"], color="grey", ls=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("weighted loss")
        ax.set_title("loss curves")
        ax.legend()
        fig.tight_layout()
        fig.savefig(d / "loss.png", dpi=90)
        plt.close(fig)
        figs.append(("loss.png", "Training and validation loss per epoch"))
    out = outputs(model, inputs, frame)
    panels = [("click (σ(ctr + Biasnet))", frame["click"].to_numpy(), out["p_ctr_biased"])]
    if "p_ctcvr_biased" in out and "purchase" in frame:
        panels.append(("purchase (pCTCVR)", frame["purchase"].to_numpy(), out["p_ctcvr_biased"]))
    if "stay" in out and "stay_s" in frame:
        c = frame["click"].to_numpy() > 0
        panels.append(("stay log1p(s), clicked", np.log1p(np.maximum(frame["stay_s"].to_numpy(float)[c], 0)),
                       out["stay"][c]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    axes = np.atleast_1d(axes)
    for ax, (name, yv, pv) in zip(axes, panels):
        _calibration(ax, yv, pv, name)
    fig.tight_layout()
    fig.savefig(d / "calibration.png", dpi=90)
    plt.close(fig)
    figs.append(("calibration.png", "Calibration per task (validation, deciles of the prediction)"))
    curve = metrics.get("position_curve") or metrics.get("position_curve_check")
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        if "true" in curve:
            ax.plot(curve["positions"], curve["true"], "o-", label="true examination (simulator)")
        ax.plot(curve["positions"], curve["learned"], "s--", label="learned (Biasnet), read on all impressions" if "learned_shown" in curve else "learned (Biasnet)")
        if "learned_shown" in curve:
            ax.plot(curve["positions"], curve["learned_shown"], "x--",
                    label="learned, read on each slot's own impressions")
        if "harvested" in curve:
            ax.plot(curve["positions"][:len(curve["harvested"])], curve["harvested"], "^:",
                    label="harvested from the log (no relevance model)")
        ax.set_xlabel("slot position")
        ax.set_ylabel("relative to position 1")
        if "true" in curve:
            ax.set_title(f"position curve, max abs error {metrics.get('position_curve_max_err', float('nan')):.3f}")
        else:
            ax.set_title("position curve, learned vs harvested: max abs difference "
                         f"{metrics.get('position_curve_learned_vs_harvested', float('nan')):.3f}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(d / "position_curve.png", dpi=90)
        plt.close(fig)
        figs.append(("position_curve.png", "Learned position bias against the planted truth and / or the "
                                           "curve harvested from the log"))
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in metrics.items() if k not in ("position_curve", "position_curve_check"))
    imgs = "".join(f"<figure><img src='{f}'><figcaption>{html.escape(c)}</figcaption></figure>" for f, c in figs)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 8px;border-bottom:1px solid #ddd}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><h2>Validation metrics</h2><table>{rows}</table>{imgs}"
            f"<h2>Model</h2><pre>{html.escape(repr(model))}</pre></body></html>")
    (d / "index.html").write_text(page)
    return d / "index.html"


__all__ = ["evaluate_ranker", "write_report", "ndcg_at_k", "learned_position_curve", "learned_position_curve_shown",
           "outputs"]

"""A personalised objective-fusion network: the user's features → the weights of the task scores.

The fixed fusion (``ranking.objectives.fuse``) ranks by one weighted sum of the task scores for every
user::

    s_i = w_ctr · log pCTR_i + w_cvr · log pCVR_i + w_stay · log(1 + stay_i)

A shopper who buys on most visits and one who only watches are served by the same trade-off. The
fusion network (seed 001's "personalised fusion") makes the weights a function of the user::

    w(u) = softplus(b + W₂ · relu(W₁ · x_u))  ∈ R^T_+       s_i = Σ_t w_t(u) · f_t(i)

with ``x_u`` the user's point-in-time Feast statistics (the ``u_*`` columns of ``user_stats``,
signed-log and standardised on the training rows), so every weight stays ≥ 0: the score is
monotone in each task, as with fixed weights. At initialisation ``W₂ = 0`` and ``b`` gives the
fixed weights (:data:`ranking.objectives.DEFAULT_FUSION`): training starts from the product's default.

Training (:func:`train_fusion`, the ranker frozen): each logged request is a list; the loss is the
listwise softmax cross-entropy (ListNet, Cao et al. 2007) against the request's LOGGED utility::

    U_i = a · click_i + b · purchase_i + c · stay_minutes_i            (weights: FusionConfig.utility)
    L = − Σ_requests Σ_i (U_i / p_i) · log softmax(s)_i    /  Σ_requests Σ_i U_i / p_i

where ``p_i`` is the examination probability of the impression's slot (the ranker's learned
position curve, clipped at ``min_exam``), so a click at slot 8 counts as the evidence it is (IPS).
Early stopping on the early-stopping rows' loss. ``personalised=False`` learns one weight vector
for everyone with the same loss — the fair fixed-weight baseline.

Shapes: ``x`` [B, F] user features, ``f`` [B, T] task scores, ``weights`` [B, T], scores [B].
"""
from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import nn

from .objectives import DEFAULT_FUSION, PROB_EPS, task_terms

log = logging.getLogger(__name__)

FUSION_TASKS = ("ctr", "cvr", "stay")
FUSION_FILE = "fusion_net.pt"


@dataclass
class FusionConfig:
    utility: dict = field(default_factory=lambda: {"click": 1.0, "purchase": 1.0, "stay_min": 1.0})
    personalised: bool = True       # False: one weight vector for every user (same loss)
    hidden: int = 16
    epochs: int = 60
    patience: int = 8
    lr: float = 0.01
    weight_decay: float = 1e-4
    batch_requests: int = 512
    min_exam: float = 0.1           # IPS clip: 1 / p_i ≤ 10
    seed: int = 0

    def __post_init__(self):
        unknown = set(self.utility) - {"click", "purchase", "stay_min"}
        if unknown or any(float(v) < 0 for v in self.utility.values()) or not any(self.utility.values()):
            raise ValueError(f"utility weights: non-negative 'click', 'purchase', 'stay_min' (one > 0), "
                             f"got {self.utility}")
        if not 0 < self.min_exam <= 1:
            raise ValueError(f"min_exam must be in (0, 1], got {self.min_exam}")


def user_columns(columns) -> list[str]:
    """The user's own statistics among ``columns`` (Feast ``user_stats``: ``u_*``)."""
    return [c for c in columns if c.startswith("u_")]


def task_matrix(p_ctr, p_cvr=None, stay_s=None, tasks=FUSION_TASKS) -> np.ndarray:
    """[N, T] task terms as the fixed fusion sums them (:func:`ranking.objectives.task_terms`)."""
    terms = task_terms(p_ctr, p_cvr, stay_s)
    missing = [t for t in tasks if t not in terms]
    if missing:
        raise ValueError(f"the fusion needs the task scores {missing} (the ranker lacks those towers)")
    return np.stack([terms[t] for t in tasks], axis=1)


def logged_utility(frame: pd.DataFrame, utility: dict) -> np.ndarray:
    """U_i = a · click + b · purchase + c · stay minutes (stay counted on clicked rows only)."""
    click = frame["click"].to_numpy(dtype=float)
    u = float(utility.get("click", 0.0)) * click
    if utility.get("purchase") and "purchase" in frame:
        u = u + float(utility["purchase"]) * frame["purchase"].to_numpy(dtype=float)
    if utility.get("stay_min") and "stay_s" in frame:
        stay = np.nan_to_num(frame["stay_s"].to_numpy(dtype=float), nan=0.0)
        u = u + float(utility["stay_min"]) * np.maximum(stay, 0.0) / 60.0 * (click > 0)
    return u


class FusionNet(nn.Module):
    """User features ``x`` [B, F] → non-negative task weights [B, T]; ``score(x, f)`` → [B]."""

    def __init__(self, feature_cols: list[str], tasks=FUSION_TASKS, hidden: int = 16, personalised: bool = True,
                 init_weights: Optional[dict] = None):
        super().__init__()
        self.feature_cols, self.tasks = list(feature_cols), tuple(tasks)
        self.hidden, self.personalised = int(hidden), bool(personalised)
        self.init_weights = dict(init_weights or DEFAULT_FUSION["default"])
        F, T = len(self.feature_cols), len(self.tasks)
        self.register_buffer("mean", torch.zeros(F))
        self.register_buffer("std", torch.ones(F))
        self.mlp = nn.Sequential(nn.Linear(F, hidden), nn.ReLU(), nn.Linear(hidden, T)) if personalised and F else None
        self.bias = nn.Parameter(torch.zeros(T))
        self.reset_parameters()

    def reset_parameters(self):
        w0 = torch.tensor([max(float(self.init_weights.get(t, 0.0)), 1e-3) for t in self.tasks])
        with torch.no_grad():
            self.bias.copy_(w0 + torch.log(-torch.expm1(-w0)))          # softplus⁻¹: starts at the fixed weights
            if self.mlp is not None:
                self.mlp[0].reset_parameters()
                nn.init.zeros_(self.mlp[2].weight)
                nn.init.zeros_(self.mlp[2].bias)

    def fit_normaliser(self, raw: np.ndarray):
        z = _signed_log(raw)
        mean, std = np.nanmean(z, axis=0), np.nanstd(z, axis=0)
        self.mean.copy_(torch.as_tensor(np.nan_to_num(mean), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.where(np.nan_to_num(std) > 1e-6, np.nan_to_num(std), 1.0), dtype=torch.float32))

    def features(self, frame: pd.DataFrame) -> torch.Tensor:
        """[B, F] normalised user features of ``frame`` (missing column → the training mean)."""
        n = len(frame)                       # a DataFrame or the request path's column mapping
        raw = np.stack([np.asarray(pd.to_numeric(np.asarray(frame[c]), errors="coerce"), dtype=float) if c in frame
                        else np.full(n, np.nan) for c in self.feature_cols], axis=1) \
            if self.feature_cols else np.zeros((n, 0))
        x = torch.as_tensor(_signed_log(raw), dtype=torch.float32)
        x = (x - self.mean) / self.std
        return torch.nan_to_num(x, nan=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:        # [B, F] -> [B, T]
        logits = self.bias.expand(x.shape[0], -1)
        if self.mlp is not None:
            logits = logits + self.mlp(x)
        return nn.functional.softplus(logits)

    def score(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:     # [B, F], [B, T] -> [B]
        return (self(x) * f).sum(-1)

    def __repr__(self):
        return (f"{type(self).__name__}(features={len(self.feature_cols)}, tasks={self.tasks}, "
                f"hidden={self.hidden if self.mlp is not None else 0}, personalised={self.personalised})")


def _signed_log(a: np.ndarray) -> np.ndarray:
    return np.sign(a) * np.log1p(np.abs(a))


# ----------------------------------------------------------------------------- training
def _lists(frame: pd.DataFrame, f: np.ndarray, x: torch.Tensor, target: np.ndarray):
    """Requests as padded lists: x [G, F] (the request's user), f [G, L, T], target [G, L], mask."""
    rid = pd.factorize(frame["request_id"].astype(str))[0]
    order = np.argsort(rid, kind="stable")
    rid, f, target = rid[order], f[order], target[order]
    first = np.r_[0, np.flatnonzero(np.diff(rid)) + 1]
    sizes = np.diff(np.r_[first, len(rid)])
    G, L, T = len(first), int(sizes.max()) if len(sizes) else 0, f.shape[1]
    slot = np.arange(len(rid)) - np.repeat(first, sizes)
    F = np.zeros((G, L, T), dtype=np.float32)
    Y = np.zeros((G, L), dtype=np.float32)
    M = np.zeros((G, L), dtype=bool)
    F[rid, slot], Y[rid, slot], M[rid, slot] = f, target, True
    keep = Y.sum(1) > 0                                    # a request with no utility says nothing here
    xs = x[torch.as_tensor(order[first])]
    return xs[torch.as_tensor(keep)], torch.as_tensor(F[keep]), torch.as_tensor(Y[keep]), torch.as_tensor(M[keep])


def _listwise_loss(net: FusionNet, x, F, Y, M) -> torch.Tensor:
    w = net(x)                                              # [G, T]
    s = (F * w[:, None, :]).sum(-1).masked_fill(~M, -1e9)   # [G, L]
    return -(Y * torch.log_softmax(s, dim=1)).sum() / Y.sum().clamp(min=PROB_EPS)


def train_fusion(fit: pd.DataFrame, fit_f: np.ndarray, stop: pd.DataFrame, stop_f: np.ndarray,
                 cfg: Optional[FusionConfig] = None, *, exam_curve=None, feature_cols=None,
                 progress: bool = False):
    """Fit a :class:`FusionNet` on the fit rows' task scores ``fit_f`` [N, T] (the frozen ranker's,
    :func:`task_matrix`) and logged utility, early-stopped on ``stop``. ``exam_curve``: examination
    of slots 1..K relative to slot 1 (slots beyond K take slot K's); None = no IPS. Returns
    ``(net, history)``."""
    cfg = cfg or FusionConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    cols = user_columns(fit.columns) if feature_cols is None else list(feature_cols)
    net = FusionNet(cols, hidden=cfg.hidden, personalised=cfg.personalised)
    if cols:
        net.fit_normaliser(np.stack([pd.to_numeric(fit[c], errors="coerce").to_numpy(dtype=float) for c in cols], 1))

    def target(frame):
        u = logged_utility(frame, cfg.utility)
        if exam_curve is not None and "position" in frame:
            curve = np.asarray(exam_curve, dtype=float)
            pos = np.clip(pd.to_numeric(frame["position"], errors="coerce").fillna(1).to_numpy(int), 1, len(curve))
            u = u / np.clip(curve[pos - 1], cfg.min_exam, 1.0)
        return u

    with torch.no_grad():
        fit_l = _lists(fit, fit_f, net.features(fit), target(fit))
        stop_l = _lists(stop, stop_f, net.features(stop), target(stop))
    if len(fit_l[0]) == 0:
        raise ValueError("no training request with a positive logged utility: nothing to fit the fusion on")
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def stop_loss():
        with torch.no_grad():
            return float(_listwise_loss(net, *stop_l)) if len(stop_l[0]) else float("nan")

    best, best_state, bad = stop_loss(), copy.deepcopy(net.state_dict()), 0
    hist = {"epochs": [], "initial_stop_loss": best, "requests": {"fit": len(fit_l[0]), "stop": len(stop_l[0])}}
    G = len(fit_l[0])
    for epoch in range(cfg.epochs):
        net.train()
        total = 0.0
        for b in np.array_split(rng.permutation(G), max(1, math.ceil(G / cfg.batch_requests))):
            idx = torch.as_tensor(b)
            loss = _listwise_loss(net, *(t[idx] for t in fit_l))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        net.eval()
        sl = stop_loss()
        hist["epochs"].append({"epoch": epoch + 1, "fit_loss": total / G, "stop_loss": sl})
        if progress or epoch % 10 == 0:
            log.info("fusion epoch %d: fit loss %.4f stop loss %.4f", epoch + 1, total / G, sl)
        if not math.isnan(sl) and sl < best - 1e-5:
            best, best_state, bad = sl, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    hist["best_stop_loss"] = best
    with torch.no_grad():
        w = net(net.features(fit)).numpy()
    hist["weights"] = {t: {"mean": round(float(w[:, i].mean()), 4), "std": round(float(w[:, i].std()), 4)}
                       for i, t in enumerate(net.tasks)}
    log.info("fusion: stop loss %.4f (fixed weights %.4f), weights %s", best, hist["initial_stop_loss"], hist["weights"])
    return net, hist


def ranker_task_matrix(model, inputs, frame: pd.DataFrame, out: Optional[dict] = None):
    """``(outputs, [N, T] task scores)`` of a trained ranker on ``frame`` — the debiased
    outputs the scorer fuses (``stay_s = expm1(stay)``, clipped at 0, as ``Ranker.predict``)."""
    from .evaluate import outputs
    o = outputs(model, inputs, frame) if out is None else out
    if "p_cvr" not in o or "stay" not in o:
        raise ValueError("the fusion network needs a ranker with the ctr, cvr and stay towers")
    return o, task_matrix(o["p_ctr"], o["p_cvr"], np.expm1(np.maximum(o["stay"], 0.0)))


def fit_for_ranker(model, inputs, fit: pd.DataFrame, stop: pd.DataFrame, cfg: Optional[FusionConfig] = None,
                   progress: bool = False):
    """Train the fusion on a frozen ranker's fit / early-stopping rows; the IPS examination is
    the ranker's own learned position curve (slots 1..10) when it has a Biasnet."""
    from .evaluate import learned_position_curve
    fo, ff = ranker_task_matrix(model, inputs, fit)
    _, sf = ranker_task_matrix(model, inputs, stop)
    curve = None
    if getattr(model, "biasnet", None) is not None and len(fit):
        curve = learned_position_curve(model, fo["ctr_logit"], positions=range(1, 11))
    net, hist = train_fusion(fit, ff, stop, sf, cfg, exam_curve=curve, progress=progress)
    hist["exam_curve"] = None if curve is None else [round(float(v), 4) for v in curve]
    return net, hist


# ----------------------------------------------------------------------------- artifacts
def save_fusion(net: FusionNet, directory, *, config: Optional[FusionConfig] = None) -> Path:
    path = Path(directory) / FUSION_FILE
    meta = {"feature_cols": net.feature_cols, "tasks": list(net.tasks), "hidden": net.hidden,
            "personalised": net.personalised, "init_weights": net.init_weights,
            "config": asdict(config) if config is not None else None}
    torch.save({"meta": json.dumps(meta), "state": net.state_dict()}, path)
    return path


def load_fusion(directory) -> Optional[FusionNet]:
    """The version's fusion network, or None when it was trained with fixed weights."""
    path = Path(directory) / FUSION_FILE
    if not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(blob["meta"])
    net = FusionNet(meta["feature_cols"], tasks=meta["tasks"], hidden=meta["hidden"],
                    personalised=meta["personalised"], init_weights=meta["init_weights"])
    net.load_state_dict(blob["state"])
    return net.eval()


__all__ = ["FusionConfig", "FusionNet", "FUSION_TASKS", "FUSION_FILE", "user_columns", "task_matrix",
           "logged_utility", "train_fusion", "ranker_task_matrix", "fit_for_ranker", "save_fusion", "load_fusion"]

"""Training of the transformer ranker: AdamW, early stopping on validation, task loss weights.

:func:`fit` trains a :class:`ranking.model.ranker.Ranker` on numpy batches built by
:meth:`ranking.dataset.RankerInputs.transform` (+ :func:`ranking.dataset.labels`):

- loss = Σ_t w_t L_t with fixed weights (``TrainConfig.loss_weights``) or learned uncertainty
  weighting (Kendall et al. 2018; ``loss_weights="uncertainty"``); L_ctr includes Biasnet's
  logit (training only), L_cvr is ESMM's pCTCVR loss on all impressions, L_stay the log1p-seconds
  MSE on clicked impressions (see ``Ranker.losses``);
- AdamW (decoupled weight decay), mini-batches in a seeded random order;
- after each epoch the weighted validation loss of all tasks (Biasnet included in the click part:
  it is what the labels measure; ``early_stop_on="ctr"`` for the click loss alone) decides early
  stopping; the best epoch's weights are restored. The sum, because the click loss alone kept
  falling for epochs after the shared experts had begun to overfit (the conversion and stay
  losses turn up first): on `make run`'s world it picked epoch 5 of 7 and the debiased AUC fell
  to 0.677 from 0.729 at epoch 2 (the sum's pick). It used to be the click loss while Biasnet
  shared the main step size and was still converging when the sum turned up; with its own step
  size (``biasnet_lr``) it converges within the first epochs — on the development worlds both
  rules picked the same epoch;
- progress: a tqdm bar per epoch when ``progress`` (rows/s), a log line per epoch always.

:func:`train_and_register_ranker` is the worker's job: event log → labels → point-in-time Feast
features with their list columns → time split → inputs (vocabularies, GBDT leaves of the active
V1, Metapath2vec vectors of the active version) → fit → metrics + HTML report → artifact →
registry; promoted only when its validation click AUC is not worse than the active ranker's.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "ranker"
WEIGHTS_FILE = "ranker.pt"
CONFIG_FILE = "ranker.json"


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Biasnet's own step size, without weight decay (None: the shared lr). It has a few dozen
    # parameters and starts flat; a slot's logit must travel ~1.6 (slot 10 in the simulator) in
    # the few hundred steps before early stopping. At the shared lr the learned curve stayed far
    # too flat (max error 0.30 on a development world), at 0.02 / 0.05 it still lagged (0.24 /
    # 0.07 with the monotone tower), at 0.1 and 0.2 it had converged (0.034 / 0.036).
    biasnet_lr: Optional[float] = 0.1
    # after early stopping, fit Biasnet alone to convergence (full batch, L-BFGS) against the kept
    # epoch's frozen relevance logits; see refit_biasnet
    refit_biasnet: bool = True
    patience: int = 2                      # epochs without a better validation loss before stopping
    early_stop_on: str = "total"           # validation loss that picks the epoch: "total" or a task name
    loss_weights: Union[dict, str] = field(default_factory=lambda: {"ctr": 1.0, "cvr": 1.0, "stay": 0.2})
    seed: int = 0
    threads: Optional[int] = None          # torch threads (None: leave as is)
    max_train_rows: Optional[int] = None   # subsample the train rows (seeded), None = all
    eval_batch_size: int = 8192


def to_tensors(batch: dict, rows=None) -> dict:
    import torch
    out = {}
    for k, v in batch.items():
        a = v if rows is None else v[rows]
        out[k] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def _n_rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


def _weighted(losses: dict, weights, uncertainty):
    if uncertainty is not None:
        return uncertainty(losses)
    return sum(float(weights.get(t, 1.0)) * v for t, v in losses.items())


def predict_batches(model, batch: dict, *, with_bias: bool = False, batch_size: int = 8192) -> dict:
    """Model outputs (numpy) for every row of ``batch``, eval mode, no grad, in chunks."""
    import torch
    model.eval()
    n = _n_rows(batch)
    parts: dict = {}
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            out = model(to_tensors(batch, slice(lo, lo + batch_size)), with_bias=with_bias)
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == min(batch_size, n - lo):
                    parts.setdefault(k, []).append(v.detach().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def validation_loss(model, batch: dict, labels: dict, weights, uncertainty=None, batch_size: int = 8192) -> dict:
    import torch
    model.eval()
    n = _n_rows(batch)
    sums: dict = {}
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            sl = slice(lo, lo + batch_size)
            xb, yb = to_tensors(batch, sl), to_tensors(labels, sl)
            out = model(xb, with_bias=True)
            losses = model.losses(out, yb)
            m = len(yb["click"])
            for t, v in losses.items():
                # stay is a mean over clicked rows: weight it by the clicked count
                w = float(yb["click"].sum()) if t == "stay" else m
                sums.setdefault(t, [0.0, 0.0])
                sums[t][0] += float(v) * w
                sums[t][1] += w
    per = {t: (s / c if c else 0.0) for t, (s, c) in sums.items()}
    if uncertainty is not None:
        with torch.no_grad():
            total = float(uncertainty({t: torch.tensor(v) for t, v in per.items()}))
    else:
        total = sum(float(weights.get(t, 1.0)) * v for t, v in per.items())
    return {"total": total, **per}


def make_optimizer(model, cfg: TrainConfig, extra=()):
    """AdamW over the model's parameters (+ ``extra``, e.g. the uncertainty weights); Biasnet's
    parameters form their own group at ``cfg.biasnet_lr`` without weight decay (when set)."""
    import torch
    bias = list(model.biasnet.parameters()) if getattr(model, "biasnet", None) is not None and cfg.biasnet_lr else []
    bias_ids = {id(p) for p in bias}
    groups = [{"params": [p for p in model.parameters() if id(p) not in bias_ids] + list(extra)}]
    if bias:
        groups.append({"params": bias, "lr": float(cfg.biasnet_lr), "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model, train: dict, train_labels: dict, valid: Optional[dict] = None, valid_labels: Optional[dict] = None,
        config: Optional[TrainConfig] = None, *, progress: bool = False) -> dict:
    """Train ``model`` in place; returns the history (per epoch: train/valid losses, seconds, rows/s)
    and the best epoch. Without validation rows, every epoch runs and the last is kept."""
    import torch
    from .model.ranker import UncertaintyWeighting

    cfg = config or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n = _n_rows(train)
    rows_all = np.arange(n)
    if cfg.max_train_rows and n > cfg.max_train_rows:
        rows_all = np.sort(rng.choice(n, size=int(cfg.max_train_rows), replace=False))
    tasks = list(model.config.tasks)
    uncertainty = UncertaintyWeighting(tasks) if cfg.loss_weights == "uncertainty" else None
    weights = {} if uncertainty is not None else dict(cfg.loss_weights)
    opt = make_optimizer(model, cfg, extra=list(uncertainty.parameters()) if uncertainty is not None else ())
    history = {"epochs": [], "best_epoch": None, "tasks": tasks}
    best, best_state, bad = math.inf, None, 0
    has_valid = valid is not None and valid_labels is not None and _n_rows(valid) > 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = rows_all[rng.permutation(len(rows_all))]
        sums, count = {}, 0
        steps = range(0, len(order), cfg.batch_size)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(order), desc=f"epoch {epoch}", unit="rows", leave=False, mininterval=1.0)
        for lo in steps:
            idx = order[lo:lo + cfg.batch_size]
            xb, yb = to_tensors(train, idx), to_tensors(train_labels, idx)
            out = model(xb)
            losses = model.losses(out, yb)
            loss = _weighted(losses, weights, uncertainty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            for t, v in losses.items():
                sums[t] = sums.get(t, 0.0) + float(v.detach()) * len(idx)
            sums["total"] = sums.get("total", 0.0) + float(loss.detach()) * len(idx)
            count += len(idx)
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        secs = time.perf_counter() - t0
        rec = {"epoch": epoch, "seconds": round(secs, 2), "rows_per_s": round(count / max(secs, 1e-9)),
               "train": {t: v / max(count, 1) for t, v in sums.items()}}
        if has_valid:
            rec["valid"] = validation_loss(model, valid, valid_labels, weights, uncertainty, cfg.eval_batch_size)
        if uncertainty is not None:
            rec["log_vars"] = {t: float(v) for t, v in zip(tasks, uncertainty.log_vars.detach())}
        history["epochs"].append(rec)
        score = rec["valid"].get(cfg.early_stop_on, rec["valid"]["total"]) if has_valid else -epoch
        msg = (f"ranker epoch {epoch}: train loss {rec['train']['total']:.4f}"
               + (f", valid loss {rec['valid']['total']:.4f}" if has_valid else "")
               + f" ({count:,} rows in {secs:.1f}s, {rec['rows_per_s']:,} rows/s)")
        log.info(msg)
        if progress:
            print(msg, flush=True)
        if score < best - 1e-6:
            best, bad = score, 0
            best_state = copy.deepcopy(model.state_dict())
            history["best_epoch"] = epoch
        else:
            bad += 1
            if has_valid and bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    if cfg.refit_biasnet and getattr(model, "biasnet", None) is not None:
        history["biasnet_refit"] = refit_biasnet(model, train, train_labels, rows_all, batch_size=cfg.eval_batch_size)
    model.eval()
    return history


def refit_biasnet(model, train: dict, train_labels: dict, rows=None, *, max_iter: int = 200,
                  batch_size: int = 8192) -> dict:
    """Fit the position tower alone, to convergence, against the frozen debiased click logits of
    the kept epoch: minimise the mean click log loss of ``biased_click_logit(a_i, b(k_i, p_i))``
    over the training rows with full-batch L-BFGS, every other parameter fixed.

    Why: during training Biasnet runs at its own large step size (``biasnet_lr``) so that it
    reaches the size of a real position effect within the first epoch; at that step size its
    few parameters keep jittering from batch to batch, and early stopping keeps whatever iterate
    the chosen epoch ended on. Refitting gives the maximum-likelihood tower for the relevance
    model that is actually kept. Returns the log loss before / after and the iterations."""
    import torch
    if rows is not None:
        train = {k: v[rows] for k, v in train.items()}
        train_labels = {k: v[rows] for k, v in train_labels.items()}
    pos = torch.from_numpy(np.ascontiguousarray(train["position"])).long()             # [N]
    if not bool((pos > 0).any()):
        return {"skipped": "no known positions"}
    if not list(model.biasnet.parameters()):
        return {"skipped": "the tower has no parameters"}
    a = torch.from_numpy(predict_batches(model, train, batch_size=batch_size)["ctr_logit"]).float()  # [N]
    page = torch.from_numpy(np.ascontiguousarray(train["page"])).long() if "page" in train else None
    y = torch.from_numpy(np.ascontiguousarray(train_labels["click"])).float()          # [N]
    return fit_biasnet_to_logits(model.biasnet, a, pos, page, y, model.config.bias_form, max_iter=max_iter)


def fit_biasnet_to_logits(tower, ctr_logit, position, page, click, form: str, *, max_iter: int = 200) -> dict:
    """Maximum-likelihood fit of a Biasnet ``tower`` alone: minimise the mean click log loss of
    ``biased_click_logit(ctr_logit, tower(position, page), form)`` with full-batch L-BFGS
    (``ctr_logit``, ``position``, ``page``, ``click``: ``[N]`` tensors; ``page`` may be None).
    Keeps the starting tower when the fit does not lower the loss. Used by :func:`refit_biasnet`
    and, with the simulator's true relevance as ``ctr_logit``, by bench/quality.py to show what
    each form can reach at best. Returns the loss before / after and the iterations."""
    import torch
    import torch.nn.functional as F
    from .model.ranker import biased_click_logit
    params = list(tower.parameters())
    if not params:
        return {"skipped": "the tower has no parameters"}

    def loss_fn():
        return F.binary_cross_entropy_with_logits(biased_click_logit(ctr_logit, tower(position, page), form), click)

    with torch.no_grad():
        before = float(loss_fn())
    state = {k: v.detach().clone() for k, v in tower.state_dict().items()}
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    tower.train()

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        after = float(loss_fn())
    if not math.isfinite(after) or after > before:        # never leave a worse tower behind
        tower.load_state_dict(state)
        after = before
    tower.eval()
    return {"loss_before": round(before, 6), "loss_after": round(after, 6),
            "iterations": int(opt.state[opt._params[0]].get("n_iter", 0))}


# ----------------------------------------------------------------------------- artifact
def save_ranker(model, inputs, directory, *, history: Optional[dict] = None, metrics: Optional[dict] = None,
                fusion: Optional[dict] = None) -> Path:
    """The trained ranker (Biasnet included: the scorer drops it) + its input pipeline."""
    import torch
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), d / WEIGHTS_FILE)
    meta = {"config": model.config.to_dict(), "history": history or {}, "metrics": metrics or {},
            "fusion": fusion}
    (d / CONFIG_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
    inputs.save(d)
    return d


def load_ranker(directory):
    """(trained Ranker in eval mode, RankerInputs, meta)."""
    import torch
    from .dataset import RankerInputs
    from .model.ranker import Ranker, RankerConfig
    d = Path(directory)
    meta = json.loads((d / CONFIG_FILE).read_text())
    # versions saved before Biasnet had a shape / form option used the additive per-slot MLP
    model = Ranker(RankerConfig.from_dict({"bias_form": "additive", "bias_shape": "mlp", **meta["config"]}))
    model.load_state_dict(torch.load(d / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model, RankerInputs.load(d), meta


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ----------------------------------------------------------------------------- end to end on frames
def build_ranker(inputs, **overrides):
    """A Ranker sized for ``inputs`` (vocabularies, dense width, leaves, m2v), ``overrides`` on top."""
    from .model.ranker import Ranker, RankerConfig
    sizes = inputs.config_sizes()
    cfg = RankerConfig(**{**sizes, **overrides})
    return Ranker(cfg)


def init_output_biases(model, y: dict) -> None:
    """Start each tower at its base rate: the CTR / CVR towers' logit at the observed rates, the
    stay tower at the mean log1p stay of clicked rows. Without this the stay MSE starts near
    E[y²] (~16 for minutes-long stays) and its gradients swamp the click task in the shared experts
    for the first epoch."""
    import torch
    click = y["click"]
    rates = {"ctr": float(click.mean()) if len(click) else 0.0}
    if click.sum() > 0:
        rates["cvr"] = float(y["purchase"][click > 0].mean())
    with torch.no_grad():
        for task, rate in rates.items():
            if task in model.towers and 0.0 < rate < 1.0:
                model.towers[task][-1].bias.fill_(math.log(rate / (1.0 - rate)))
        if "stay" in model.towers and click.sum() > 0:
            model.towers["stay"][-1].bias.fill_(float(y["stay"][click > 0].mean()))


def train_on_frames(train_df, valid_df, dense_cols, *, catalog=None, embeddings=None, gbdt=None,
                    ranker_overrides: Optional[dict] = None, train_config: Optional[TrainConfig] = None,
                    extra_frames=(), position_frame=None, position_curve=None, progress: bool = False):
    """Fit inputs on ``train_df``, build and train a ranker (early stopping on ``valid_df``).
    ``position_frame``: the impressions the harvested position curve is estimated from (default
    ``train_df``; pass the whole training period when ``train_df`` is a part of it — positions and
    clicks leak nothing into the curve). ``position_curve``: a fixed curve by slot (examination
    relative to slot 1, e.g. from randomised traffic: ``streamrank position-curve``) for a
    ``"table"`` Biasnet instead of the harvested one. Returns (model, inputs, history)."""
    import torch
    from .dataset import RankerInputs, labels
    cfg = train_config or TrainConfig()
    torch.manual_seed(cfg.seed)
    inputs = RankerInputs.fit(train_df, dense_cols, catalog=catalog, embeddings=embeddings, gbdt=gbdt,
                              extra_frames=extra_frames)
    overrides = dict(ranker_overrides or {})
    model = build_ranker(inputs, **overrides)
    curve_info = None
    if model.biasnet is not None and model.biasnet.shape == "table" and position_curve is not None:
        from .position_bias import curve_table
        c = model.biasnet
        fixed = curve_table(position_curve, n_positions=c.n_positions, n_pages=c.n_pages)
        model.biasnet.set_table(fixed.log_exam)
        curve_info = {"source": "given", **fixed.as_dict()}
    elif model.biasnet is not None and model.biasnet.shape == "table":
        model, curve_info = harvest_into(model, inputs, train_df if position_frame is None else position_frame,
                                         overrides)
    xt, yt = inputs.transform(train_df), labels(train_df)
    init_output_biases(model, yt)
    xv = yv = None
    if valid_df is not None and len(valid_df):
        xv, yv = inputs.transform(valid_df), labels(valid_df)
    history = fit(model, xt, yt, xv, yv, cfg, progress=progress)
    if curve_info is not None:
        history["position_curve_source"] = curve_info
    return model, inputs, history


def harvest_into(model, inputs, frame, overrides: dict):
    """Fill a ``"table"`` Biasnet with the curve harvested from ``frame``
    (:mod:`ranking.position_bias`). When the log holds too few repeated user–stream exposures at
    different slots, fall back to the learned monotone tower (same form) and say so. Returns
    (model, info for the history)."""
    from .position_bias import harvest_from_frame
    c = model.biasnet
    curve = harvest_from_frame(frame, inputs.pages, n_positions=c.n_positions, n_pages=c.n_pages)
    if curve is None:
        log.warning("too few user–stream pairs seen at different slots to harvest the position curve: "
                    "Biasnet falls back to the learned monotone tower")
        return build_ranker(inputs, **{**overrides, "bias_shape": "monotone"}), {"source": "learned (harvest: too few pairs)"}
    model.biasnet.set_table(curve.log_exam)
    log.info("position curve harvested from %d impressions of %d user–stream pairs: %s", curve.rows, curve.pairs,
             curve.as_dict()["curve"])
    return model, {"source": "harvested", **curve.as_dict()}


# ----------------------------------------------------------------------------- the registry job
EARLY_STOP_FRAC = 0.15
PROMOTION_METRICS = ("auc", "cvr_auc_all")
# Metapath2vec inputs must be point in time too: vectors trained on the events of the ranker's own
# training rows encode those rows' clicks (a user–stream edge exists BECAUSE of the label), so the
# model learns to trust the dot product, and early stopping (same window) cannot see it. Measured
# on the simulator: validation AUC 0.66 with such vectors vs 0.72 without any. So the first
# GRAPH_FRAC of the training period feeds the graph only, and the ranker trains on the rows after.
GRAPH_FRAC = 0.3


def graph_cut(fit_df, frac: float = GRAPH_FRAC):
    """The instant splitting the training rows into graph-only (before) and ranker rows (from it)."""
    import pandas as pd
    ts = pd.to_datetime(fit_df["ts"], utc=True).sort_values()
    return ts.iloc[min(int(len(ts) * frac), len(ts) - 1)] if len(ts) else None      # higher is better; compared with the active version's


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
        model, inputs, _ = load_ranker(current["artifact_path"])
        same = evaluate_ranker(model, inputs, valid)
    except Exception as exc:
        log.warning("active ranker %s cannot be scored on the new window: %s", current.get("version"), exc)
        return True, f"active {current.get('version')} cannot be scored ({type(exc).__name__})", None
    versus = {"version": current.get("version"), "n": int(len(valid)),
              **{k: same.get(k) for k in PROMOTION_METRICS}}
    ok, why = should_promote(metrics, {"version": current.get("version"), "metrics": same})
    return ok, why + f" (both on the same {len(valid)} rows)", versus


def embeddings_before(url: str, events, catalog, cut):
    """Metapath2vec vectors trained from scratch on the events before ``cut`` (:func:`graph_cut`:
    before every row the ranker trains or validates on) with the active version's dimension; None
    when no graph job has run yet.

    The active version was trained on every event: a user–stream dot product that has seen the
    clicks of the rows it scores leaks them (a first run measured a validation AUC above the
    simulator's oracle). The vectors are kept in the ranker's artifact (RankerInputs): serving uses
    the very vectors the model was trained with. No warm start: the active vectors have seen the
    later events."""
    import pandas as pd
    try:
        from graph.artifacts import load_active
        active = load_active(url)
    except Exception as exc:              # artifact missing / unreadable: train without
        log.warning("no Metapath2vec embeddings for the ranker: %s", exc)
        return None
    if active is None:
        return None
    if cut is None:
        return active
    from graph.build import build_graph
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    t0 = time.perf_counter()
    before = events[pd.to_datetime(events["ts"], utc=True) < pd.Timestamp(cut)]
    before = before[before["type"].isin(["watch", "click", "item_click", "purchase"])]
    cfg = M2VConfig(dim=active.dim)
    emb = train_metapath2vec(build_graph(before, catalog), cfg)
    log.info("ranker: Metapath2vec on %d events before %s in %.1fs", len(before), cut, time.perf_counter() - t0)
    return emb


def train_and_register_ranker(settings, *, end: Optional[datetime] = None, valid_frac: float = 0.2,
                              ranker_overrides: Optional[dict] = None, train_config: Optional[TrainConfig] = None,
                              progress: bool = False) -> dict:
    """Train the ranker on the event log (up to ``end``), evaluate it, register it; idempotent per
    data version (+ config). Uses the active ``gbdt`` (leaf inputs) and Metapath2vec vectors trained
    on the events before the validation period (:func:`embeddings_before`) when a graph version
    exists. Promotion: when no ranker is active or, with the active version scored on the same
    validation rows (:func:`head_to_head`), no promotion metric is worse. Returns the registry
    row (+ ``report`` path)."""
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
    fingerprint = hashlib.sha1(json.dumps([asdict(cfg), ranker_overrides or {}], sort_keys=True,
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
        cut = graph_cut(fit_df)
        embeddings = embeddings_before(url, events, catalog, cut)
        if embeddings is not None:              # point-in-time vectors: rank only the rows after them
            fit_df = fit_df[fit_df["ts"] >= cut].reset_index(drop=True)
        overrides = dict(ranker_overrides or {})
        model, inputs, history = train_on_frames(
            fit_df, stop_df, list(FEATURE_COLUMNS), catalog=catalog, embeddings=embeddings, gbdt=gbdt,
            ranker_overrides=overrides, train_config=cfg, extra_frames=[valid], progress=progress,
            position_frame=train)         # a harvested curve ("table" Biasnet) reads the whole training period
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
        metrics = evaluate_ranker(model, inputs, valid, truth=truth, harvested=harvested)
        if "position_curve_learned_vs_harvested" in metrics:
            log.info("position curve: learned vs harvested from the log (no relevance model) differ by at most "
                     "%.3f (a large gap: the tower absorbed part of the logging policy's ordering)",
                     metrics["position_curve_learned_vs_harvested"])
        metrics.update({"n_train": int(len(fit_df)), "n_stop": int(len(stop_df)), "n_valid": int(len(valid)),
                        "gbdt_version": (gbdt_row or {}).get("version"),
                        "m2v_events_before": (str(cut) if embeddings is not None else None),
                        "train_seconds": round(time.perf_counter() - t0, 2)})
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{stamp}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        path = Path(settings.artifact_dir) / "models" / MODEL_NAME / version
        save_ranker(model, inputs, path, history=history, metrics=metrics)
        report = write_report(path / "report", model, inputs, valid, history, metrics, truth=truth)
        current = active_model(url, MODEL_NAME)
        ok, why, versus = head_to_head(metrics, valid, current)
        metrics["versus_active"] = versus
        job.check()                   # the lease is still ours: publish
        row = register_model(url, MODEL_NAME, version, str(path), metrics=metrics, data_version=key)
        if ok:
            row = promote(url, MODEL_NAME, version)
        log.info("ranker %s %s: %s", version, "promoted" if ok else "registered, NOT promoted", why)
        msg = (f"ranker {version}: valid auc {metrics.get('auc')} gauc {metrics.get('gauc')} "
               f"cvr auc {metrics.get('cvr_auc_all')} stay rmse {metrics.get('stay_rmse')} "
               f"(oracle {metrics.get('oracle_auc')}) n={metrics.get('n')} in {time.perf_counter() - t0:.1f}s; "
               f"report {report}")
        log.info(msg)
        if progress:
            print(msg, flush=True)
        return dict(row, report=str(report))


__all__ = ["TrainConfig", "should_promote", "head_to_head", "graph_cut", "embeddings_before", "GRAPH_FRAC", "fit", "predict_batches", "save_ranker", "load_ranker", "build_ranker",
           "train_on_frames", "train_and_register_ranker", "MODEL_NAME"]

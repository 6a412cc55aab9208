"""Training of the transformer ranker: AdamW, early stopping on validation, task loss weights.

:func:`fit` trains a :class:`ranking.model.ranker.Ranker` on numpy batches built by
:meth:`ranking.dataset.RankerInputs.transform` (+ :func:`ranking.dataset.labels`):

- loss = Σ_t w_t L_t with fixed weights (``TrainConfig.loss_weights``), learned uncertainty
  weighting (Kendall et al. 2018; ``loss_weights="uncertainty"``) or Dynamic Weight Average
  (Liu et al., CVPR 2019; ``loss_weights="dwa"``: :func:`dwa_weights`, per epoch from the tasks'
  last two train losses; early stopping keeps comparing the fixed default weights); L_ctr includes Biasnet's
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

One job per file around it: ``ranking.batches`` (numpy ↔ torch in chunks), ``ranking.refit``
(Biasnet refitted alone after early stopping), ``ranking.artifacts`` (save / load),
``ranking.promotion`` (the promotion rule), ``ranking.graph_vectors`` (point-in-time Metapath2vec)
and ``ranking.job`` (the worker's registry job, :func:`ranking.job.train_and_register_ranker`).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from .batches import _n_rows, to_tensors
from .refit import refit_biasnet

log = logging.getLogger(__name__)


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
    dwa_temperature: float = 2.0           # loss_weights="dwa": the softmax temperature T
    seed: int = 0
    threads: Optional[int] = None          # torch threads (None: leave as is)
    max_train_rows: Optional[int] = None   # subsample the train rows (seeded), None = all
    eval_batch_size: int = 8192
    # slot IPS (seed 003 §4.5): a clicked row's training loss weighted by 1 / examination(its slot),
    # the curve by slot relative to slot 1 (e.g. from randomised traffic: streamrank position-curve),
    # clipped at slot_ips_max; None = off. Usually instead of Biasnet (use_biasnet=False).
    slot_ips: Optional[tuple] = None
    slot_ips_max: float = 10.0






DEFAULT_LOSS_WEIGHTS = {"ctr": 1.0, "cvr": 1.0, "stay": 0.2}


def dwa_weights(epochs: list, tasks, temperature: float, base: dict) -> dict:
    """Dynamic Weight Average: w_k = base_k · K · softmax_k(r_k / T), r_k = L_k(t−1) / L_k(t−2) —
    a task whose loss fell less in the last epoch gets more weight. The base weights until two
    epochs exist."""
    if len(epochs) < 2:
        return dict(base)
    r = np.array([epochs[-1]["train"][t] / max(epochs[-2]["train"][t], 1e-12) for t in tasks])
    e = np.exp((r - r.max()) / temperature)
    soft = len(tasks) * e / e.sum()
    return {t: float(base.get(t, 1.0) * w) for t, w in zip(tasks, soft)}


def _weighted(losses: dict, weights, uncertainty):
    if uncertainty is not None:
        return uncertainty(losses)
    return sum(float(weights.get(t, 1.0)) * v for t, v in losses.items())




def validation_loss(model, batch: dict, labels: dict, weights, uncertainty=None, batch_size: int = 8192) -> dict:
    import torch
    model.eval()
    n = _n_rows(batch)
    sums: dict = {}
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            sl = slice(lo, lo + batch_size)
            xb, yb = to_tensors(batch, sl), to_tensors(labels, sl)
            out = model(xb, with_bias=True, with_position=True)
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
    dwa = cfg.loss_weights == "dwa"
    if isinstance(cfg.loss_weights, str) and cfg.loss_weights not in ("uncertainty", "dwa"):
        raise ValueError(f"loss_weights must be a dict, 'uncertainty' or 'dwa', got {cfg.loss_weights!r}")
    weights = {} if uncertainty is not None else (dict(DEFAULT_LOSS_WEIGHTS) if dwa else dict(cfg.loss_weights))
    opt = make_optimizer(model, cfg, extra=list(uncertainty.parameters()) if uncertainty is not None else ())
    history = {"epochs": [], "best_epoch": None, "tasks": tasks}
    best, best_state, bad = math.inf, None, 0
    has_valid = valid is not None and valid_labels is not None and _n_rows(valid) > 0
    row_weights = None
    if cfg.slot_ips is not None:
        from .position_bias import slot_ips_weights
        row_weights = slot_ips_weights(train["position"], train_labels["click"], cfg.slot_ips, cfg.slot_ips_max)
        history["slot_ips"] = {"mean_weight": round(float(row_weights.mean()), 4),
                               "max_weight": round(float(row_weights.max()), 4)}
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
        train_w = dwa_weights(history["epochs"], tasks, cfg.dwa_temperature, weights) if dwa else weights
        for lo in steps:
            idx = order[lo:lo + cfg.batch_size]
            xb, yb = to_tensors(train, idx), to_tensors(train_labels, idx)
            out = model(xb)
            wb = None if row_weights is None else torch.from_numpy(row_weights[idx])
            losses = model.losses(out, yb, weights=wb)
            loss = _weighted(losses, train_w, uncertainty)
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
        if dwa:
            rec["dwa_weights"] = train_w
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


def train_on_frames(train_df, valid_df, dense_cols, *, catalog=None, embeddings=None, graph_versions=None,
                    item_vectors=None, gbdt=None,
                    ranker_overrides: Optional[dict] = None, train_config: Optional[TrainConfig] = None,
                    extra_frames=(), position_frame=None, position_curve=None, progress: bool = False):
    """Fit inputs on ``train_df``, build and train a ranker (early stopping on ``valid_df``).
    ``position_frame``: the impressions the harvested position curve is estimated from (default
    ``train_df``; pass the whole training period when ``train_df`` is a part of it — positions and
    clicks leak nothing into the curve). ``position_curve``: a fixed curve by slot (examination
    relative to slot 1, e.g. from randomised traffic: ``streamrank position-curve``) for a
    ``"table"`` Biasnet instead of the harvested one. ``graph_versions``: point-in-time
    Metapath2vec vectors (graph.versions; each row the newest version trained before it).
    ``item_vectors``: ``(item_id, vector)`` of a precomputed file (ranking.item_vectors). Returns (model, inputs, history)."""
    import torch
    from .dataset import RankerInputs, labels
    cfg = train_config or TrainConfig()
    torch.manual_seed(cfg.seed)
    inputs = RankerInputs.fit(train_df, dense_cols, catalog=catalog, embeddings=embeddings, gbdt=gbdt,
                              extra_frames=extra_frames, graph_versions=graph_versions, item_vectors=item_vectors)
    overrides = dict(ranker_overrides or {})
    model = build_ranker(inputs, **overrides)
    if getattr(model, "item_vec_proj", None) is not None:
        model.set_item_vectors(inputs.item_vectors)
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


__all__ = ["TrainConfig", "fit", "make_optimizer", "validation_loss", "build_ranker", "train_on_frames",
           "harvest_into"]

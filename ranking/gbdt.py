"""V1 ranker: a point-wise LightGBM CTR model on point-in-time Feast statistics (seed article 004).

- :func:`sample_weight`: per-impression training weights combining click, purchase and stay time.
- :func:`train_gbdt` -> :class:`GBDTModel` (``predict`` gives click probabilities; ``save`` /
  ``load`` as ``model.txt`` + ``meta.json``).
- :class:`LeafEncoder`: the leaf each tree sends a row to, as GLOBAL ids
  ``tree_index * num_leaves + leaf_index`` (``num_leaves`` = the configured maximum), ready to be
  embedded one table per model by the transformer ranker of later issues.
- :func:`time_split`, :func:`train_and_register`: the training job (event log -> labels -> Feast
  historical features -> time split -> train -> validation metrics next to the popularity baseline
  and, on simulated data, the oracle -> artifact -> model registry).

LightGBM is imported inside functions: the API imports this module to score.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MODEL_NAME = "gbdt"
MODEL_FILE = "model.txt"
META_FILE = "meta.json"

DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "min_sum_hessian_in_leaf": 1e-3,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "metric": ["auc", "binary_logloss"],
    "first_metric_only": True,
    "num_threads": 2,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}

# ----------------------------------------------------------------------------- sample weights
# Seed 004 trains the CTR model point-wise on impressions, with heavier weights for the clicks that
# turned into value: a long stay in the room, a purchase. Our form:
#     w = 1 + click * ALPHA * min(log1p(stay_s) / log1p(stay_ref), STAY_CAP) + BETA * purchase
# stay_ref = the median stay of the clicked impressions with stay > 0 (a typical watch adds
# ALPHA to a click; a 10x longer one a bit more, capped), purchases add BETA. Non-clicks keep 1.
ALPHA = 1.0
BETA = 2.0
STAY_CAP = 3.0


def sample_weight(click, purchase=None, stay_s=None, *, alpha: float = ALPHA, beta: float = BETA,
                  stay_ref: Optional[float] = None, stay_cap: float = STAY_CAP) -> np.ndarray:
    """Training weights per impression (see the formula above); monotone in purchase and stay.

    ``click`` may also be a labels DataFrame with columns click / purchase / stay_s.
    """
    if isinstance(click, pd.DataFrame):
        frame = click
        click = frame["click"]
        purchase = frame["purchase"] if purchase is None and "purchase" in frame else purchase
        stay_s = frame["stay_s"] if stay_s is None and "stay_s" in frame else stay_s
    c = np.nan_to_num(np.asarray(click, dtype=float).reshape(-1))
    n = len(c)
    b = np.zeros(n) if purchase is None else np.nan_to_num(np.asarray(purchase, dtype=float).reshape(-1))
    s = np.zeros(n) if stay_s is None else np.nan_to_num(np.asarray(stay_s, dtype=float).reshape(-1))
    s = np.maximum(s, 0.0)
    c = (c > 0).astype(float)
    b = (b > 0).astype(float)
    if stay_ref is None:
        clicked = s[(c > 0) & (s > 0)]
        stay_ref = float(np.median(clicked)) if len(clicked) else 0.0
    if stay_ref > 0:
        stay_term = np.minimum(np.log1p(s) / math.log1p(stay_ref), stay_cap)
    else:
        stay_term = np.zeros(n)
    return 1.0 + c * alpha * stay_term + beta * b


# ----------------------------------------------------------------------------- model
def _matrix(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"missing feature column(s): {missing[:10]}")
    return df[list(cols)].to_numpy(dtype=np.float64, na_value=np.nan)


class GBDTModel:
    """A trained LightGBM booster plus what is needed to use it (feature order, params, metrics)."""

    def __init__(self, booster, feature_cols: Sequence[str], params: dict, metrics: Optional[dict] = None,
                 label: str = "click", odds_scale: float = 1.0):
        self.booster = booster
        self.feature_cols = list(feature_cols)
        self.params = dict(params)
        self.metrics = dict(metrics or {})
        self.label = label
        # prior correction of weighted training: the booster estimates odds x odds_scale
        # (odds_scale = mean weight of the positives / mean weight of the negatives)
        self.odds_scale = float(odds_scale)

    @property
    def num_leaves(self) -> int:
        return int(self.params.get("num_leaves", 31))

    @property
    def num_trees(self) -> int:
        return int(self.booster.num_trees())

    def predict_raw(self, df: pd.DataFrame, num_threads: Optional[int] = None) -> np.ndarray:
        """The booster's own probabilities (before the weighting correction).

        ``num_threads=1`` for small request-time batches: LightGBM's OpenMP team costs more than it
        saves on ~200 rows (7.8 ms vs 0.9 ms measured on 2 busy cores)."""
        if len(df) == 0:
            return np.zeros(0)
        kw = {} if num_threads is None else {"num_threads": int(num_threads)}
        return np.asarray(self.booster.predict(_matrix(df, self.feature_cols), **kw), dtype=np.float64)

    def predict(self, df: pd.DataFrame, num_threads: Optional[int] = None) -> np.ndarray:
        """Click probabilities for the rows of ``df`` (which holds :attr:`feature_cols`; extra columns
        and any column order are fine). Weighted training is undone: p / (p + (1 - p) * odds_scale)
        (a monotone map: rankings and AUC are unchanged, probabilities are calibrated to the base rate)."""
        p = self.predict_raw(df, num_threads=num_threads)
        if self.odds_scale != 1.0 and len(p):
            p = p / (p + (1.0 - p) * self.odds_scale)
        return p

    def predict_leaves(self, df: pd.DataFrame, num_threads: Optional[int] = None) -> np.ndarray:
        """Per-tree leaf indices [n, n_trees] (local to each tree)."""
        if len(df) == 0:
            return np.zeros((0, self.num_trees), dtype=np.int64)
        kw = {} if num_threads is None else {"num_threads": int(num_threads)}
        out = self.booster.predict(_matrix(df, self.feature_cols), pred_leaf=True, **kw)
        return np.asarray(out, dtype=np.int64).reshape(len(df), -1)

    def feature_importance(self, kind: str = "gain") -> dict:
        vals = self.booster.feature_importance(importance_type=kind)
        return {c: float(v) for c, v in sorted(zip(self.feature_cols, vals), key=lambda x: -x[1])}

    def save(self, path) -> Path:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(p / MODEL_FILE))
        meta = {"feature_cols": self.feature_cols, "params": self.params, "metrics": self.metrics,
                "label": self.label, "num_trees": self.num_trees, "num_leaves": self.num_leaves,
                "odds_scale": self.odds_scale}
        (p / META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
        return p

    @classmethod
    def load(cls, path) -> "GBDTModel":
        import lightgbm as lgb
        p = Path(path)
        meta = json.loads((p / META_FILE).read_text())
        booster = lgb.Booster(model_file=str(p / MODEL_FILE))
        return cls(booster, meta["feature_cols"], meta["params"], meta.get("metrics"), meta.get("label", "click"),
                   odds_scale=meta.get("odds_scale", 1.0))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class LeafEncoder:
    """Global leaf ids of a :class:`GBDTModel`: ``tree_index * num_leaves + leaf_index``.

    ``n_tokens = n_trees * num_leaves`` is the size of an embedding table over these ids; the ids
    of tree t lie in ``[t * num_leaves, (t + 1) * num_leaves)``.
    """

    def __init__(self, model: GBDTModel):
        self.model = model
        self.num_leaves = model.num_leaves
        self.n_trees = model.num_trees
        self.n_tokens = self.n_trees * self.num_leaves
        self._offset = np.arange(self.n_trees, dtype=np.int64) * self.num_leaves

    def transform(self, df: pd.DataFrame, num_threads: Optional[int] = None) -> np.ndarray:
        leaves = self.model.predict_leaves(df, num_threads=num_threads)
        if leaves.shape[1] != self.n_trees:
            raise ValueError(f"model returned {leaves.shape[1]} trees, expected {self.n_trees}")
        if len(leaves) and leaves.max() >= self.num_leaves:
            raise ValueError("a leaf index exceeds num_leaves (params do not describe this booster)")
        return leaves + self._offset[None, :]


# ----------------------------------------------------------------------------- training
def train_gbdt(train_df: pd.DataFrame, valid_df: Optional[pd.DataFrame], feature_cols: Sequence[str],
               label: str = "click", weight=None, params: Optional[dict] = None, num_boost_round: int = 300,
               early_stopping: Optional[int] = 30, valid_weight=None, correct_weights: bool = True) -> GBDTModel:
    """Train a binary LightGBM model; early stopping on the validation AUC when ``valid_df`` has both
    classes. ``weight``: per-row training weights (array) or the name of a column of ``train_df``.
    The returned booster keeps only the trees up to the best iteration. With weights and
    ``correct_weights``, :meth:`GBDTModel.predict` undoes the odds inflation the weights cause."""
    import lightgbm as lgb

    t0 = time.perf_counter()
    p = {**DEFAULT_PARAMS, **(params or {})}
    cols = list(feature_cols)
    y = train_df[label].to_numpy(dtype=np.float64)
    if isinstance(weight, str):
        weight = train_df[weight].to_numpy(dtype=np.float64)
    dtrain = lgb.Dataset(_matrix(train_df, cols), label=y, weight=weight, feature_name=cols,
                         free_raw_data=True, params={"verbose": -1})
    valid_sets, names, callbacks = [], [], []
    use_valid = (valid_df is not None and len(valid_df) > 0
                 and len(np.unique(valid_df[label].to_numpy())) == 2)
    if use_valid:
        if isinstance(valid_weight, str):
            valid_weight = valid_df[valid_weight].to_numpy(dtype=np.float64)
        dvalid = lgb.Dataset(_matrix(valid_df, cols), label=valid_df[label].to_numpy(dtype=np.float64),
                             weight=valid_weight, reference=dtrain, feature_name=cols)
        valid_sets, names = [dvalid], ["valid"]
        if early_stopping:
            callbacks.append(lgb.early_stopping(int(early_stopping), first_metric_only=True, verbose=False))
    booster = lgb.train(p, dtrain, num_boost_round=int(num_boost_round), valid_sets=valid_sets,
                        valid_names=names, callbacks=callbacks)
    best = int(booster.best_iteration or 0)
    if 0 < best < booster.num_trees():
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    odds_scale = 1.0
    if weight is not None and correct_weights:
        w = np.asarray(weight, dtype=np.float64)
        pos = y > 0.5
        if pos.any() and (~pos).any():
            odds_scale = float(w[pos].mean() / w[~pos].mean())
    model = GBDTModel(booster, cols, p, {"best_iteration": best or int(booster.num_trees()),
                                         "train_seconds": round(time.perf_counter() - t0, 3)}, label=label,
                      odds_scale=odds_scale)
    log.info("train_gbdt: %d rows x %d features -> %d trees in %.1fs", len(train_df), len(cols),
             model.num_trees, time.perf_counter() - t0)
    return model


def time_split(frame: pd.DataFrame, valid_frac: float = 0.2, ts_col: str = "ts"):
    """(train, valid) by time: valid = the rows at or after the time of the ``1 - valid_frac``
    quantile row, so one instant never straddles the split (train is never empty when possible)."""
    if not 0 < valid_frac < 1:
        raise ValueError("valid_frac must be in (0, 1)")
    f = frame.sort_values(ts_col, kind="stable").reset_index(drop=True)
    n = len(f)
    if n < 2:
        return f, f.iloc[:0]
    cut_i = min(max(int(round(n * (1 - valid_frac))), 1), n - 1)
    cut = f[ts_col].iloc[cut_i]
    is_valid = (f[ts_col] >= cut).to_numpy()
    if is_valid.all():                 # every row at the same instant as the cut: split after it
        later = (f[ts_col] > cut).to_numpy()
        is_valid = later if later.any() else np.arange(n) >= cut_i
    return f[~is_valid].reset_index(drop=True), f[is_valid].reset_index(drop=True)


EARLY_STOP_FRAC = 0.15          # share of the train period (its end) used to pick the number of trees
POPULARITY_FEATURE = "s_clicks_7d"       # the popularity baseline: the stream's clicks of the last 7 days


def _clean(v):
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else round(float(v), 5)
    if isinstance(v, np.integer):
        return int(v)
    return v


def evaluate_frame(model: GBDTModel, valid: pd.DataFrame, *, label: str = "click",
                   truth_path: Optional[Path] = None) -> dict:
    """Validation metrics of ``model`` and the baselines on the same rows."""
    from .metrics import auc, gauc, logloss
    y = valid[label].to_numpy()
    p = model.predict(valid)
    out = {"auc": auc(y, p), "gauc": gauc(y, p, valid["user_id"].to_numpy()), "logloss": logloss(y, p),
           "n": int(len(valid)), "positive_rate": float(np.mean(y)) if len(y) else float("nan")}
    if POPULARITY_FEATURE in valid.columns:
        pop = np.nan_to_num(valid[POPULARITY_FEATURE].to_numpy(dtype=float))
        out["popularity_auc"] = auc(y, pop)
        out["popularity_gauc"] = gauc(y, pop, valid["user_id"].to_numpy())
    if truth_path is not None and Path(truth_path).exists() and "event_id" in valid.columns:
        truth = pd.read_parquet(truth_path, columns=["event_id", "p_click"])
        truth = truth.drop_duplicates("event_id").assign(event_id=lambda d: d["event_id"].astype(str))
        m = valid[["event_id", label, "user_id"]].assign(event_id=lambda d: d["event_id"].astype(str)).merge(
            truth, on="event_id", how="inner")
        if len(m):
            yo, po = m[label].to_numpy(), m["p_click"].to_numpy(dtype=float)
            out["oracle_auc"] = auc(yo, po)
            out["oracle_gauc"] = gauc(yo, po, m["user_id"].to_numpy())
            out["oracle_logloss"] = logloss(yo, po)
            out["oracle_n"] = int(len(m))
    return {k: _clean(v) for k, v in out.items()}


def _data_key(settings, end: Optional[datetime]) -> str:
    from store.ingest import training_key
    return training_key(settings.database_url, end)


MIN_HEAD_TO_HEAD_ROWS = 200      # fewer unseen rows than this: compare on the whole new window


def head_to_head(model: "GBDTModel", valid: pd.DataFrame, current: Optional[dict]) -> tuple[bool, str, Optional[dict]]:
    """Whether the new ``model`` replaces the ``current`` registry row: both scored on the SAME
    rows — the new validation window — and the new one promoted when its AUC there is not worse.

    (Each version's own metric comes from its own, older window: comparing those compares
    windows, not models.) Rows the active version may have trained on (before its own
    ``valid_from``) are left out when at least MIN_HEAD_TO_HEAD_ROWS remain. An active version
    that cannot be loaded or scored is replaced. Returns (promote, why, the comparison)."""
    from .metrics import auc
    if current is None:
        return True, "no active version", None
    try:
        active = GBDTModel.load(current["artifact_path"])
    except Exception as exc:                                  # broken artifact: nothing to defend
        return True, f"active {current['version']} cannot be loaded ({type(exc).__name__})", None
    rows = valid
    since = (current.get("metrics") or {}).get("valid_from")
    if since is not None and "ts" in valid.columns:
        unseen = valid[pd.to_datetime(valid["ts"], utc=True) >= pd.Timestamp(since)]
        if len(unseen) >= MIN_HEAD_TO_HEAD_ROWS and unseen["click"].nunique() == 2:
            rows = unseen
    y = rows["click"].to_numpy()
    try:
        a_new, a_cur = auc(y, model.predict(rows)), auc(y, active.predict(rows))
    except Exception as exc:
        return True, f"active {current['version']} cannot score the new window ({type(exc).__name__})", None
    versus = {"version": current["version"], "n": int(len(rows)), "auc": a_new, "active_auc": a_cur}
    if not np.isfinite(a_new):
        return False, "no validation auc", versus
    if np.isfinite(a_cur) and a_new < a_cur:
        return False, f"auc {a_new:.4f} < active's {a_cur:.4f} on the same {len(rows)} rows", versus
    return True, f"auc {a_new:.4f} >= active's {a_cur:.4f} on the same {len(rows)} rows", versus


def train_and_register(settings, *, end: Optional[datetime] = None, valid_frac: float = 0.2,
                       params: Optional[dict] = None, num_boost_round: int = 300, progress: bool = False) -> dict:
    """Train the V1 model on the event log (up to ``end``) and register it; idempotent per data version.

    Labels: :func:`ranking.samples.impression_labels`; features: :func:`ranking.samples.training_frame`
    (Feast ``get_historical_features``, point in time: the statistics job must have run); the last
    ``valid_frac`` of the impressions (by time) validate. The new version is promoted when it is the
    first or, scored with the active version on the same new validation rows
    (:func:`head_to_head`), its AUC is not worse. Returns the registry row.
    """
    from store.jobs import job_run
    from store.registry import already_trained

    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    url = settings.database_url
    key = _data_key(settings, end)
    existing = already_trained(url, MODEL_NAME, key)
    if existing is not None:
        log.info("train_and_register: data version %s already trained (%s); not retraining", key,
                 existing["version"])
        return existing
    with job_run(url, "train_gbdt", key) as job:      # one run per key, even with two schedulers
        if job.skip:
            return already_trained(url, MODEL_NAME, key, job.detail)
        row = _train_and_register(settings, key, job, end=end, valid_frac=valid_frac, params=params,
                                  num_boost_round=num_boost_round, progress=progress)
        job.detail.update({"version": row["version"], "artifact_path": row["artifact_path"]})
        return dict(row, skipped=False)


def _train_and_register(settings, key: str, job, *, end, valid_frac, params, num_boost_round, progress) -> dict:
    from store.ingest import load_catalog, load_events
    from store.registry import active_model, promote, register_model
    from store.sources import TRUTH_FILE

    from .samples import impression_labels, training_frame

    t0 = time.perf_counter()
    url = settings.database_url

    events = load_events(url, end=end)
    catalog = load_catalog(url)
    labels = impression_labels(events, catalog.get("streams"))
    log.info("train_and_register: %d events -> %d impressions (%d clicks)", len(events), len(labels),
             int(labels["click"].sum()) if len(labels) else 0)
    if len(labels) < 10 or labels["click"].nunique() < 2:
        raise ValueError(f"not enough impressions with both classes to train ({len(labels)} impressions)")
    frame = training_frame(settings, labels, progress=progress)
    from feature_repo.features import FEATURE_COLUMNS
    feature_cols = list(FEATURE_COLUMNS)
    train, valid = time_split(frame, valid_frac)
    # the number of trees is chosen on the last part of the TRAIN period (early stopping), then the
    # model is refit on the whole train period: the validation rows stay unseen until evaluation
    fit, stop = time_split(train, EARLY_STOP_FRAC)
    probe = train_gbdt(fit, stop, feature_cols, label="click", weight=sample_weight(fit), params=params,
                       num_boost_round=num_boost_round)
    rounds = min(max(int(round(probe.metrics["best_iteration"] * len(train) / max(len(fit), 1))), 1),
                 int(num_boost_round))
    model = train_gbdt(train, None, feature_cols, label="click", weight=sample_weight(train), params=params,
                       num_boost_round=rounds)
    truth = Path(settings.artifact_dir) / TRUTH_FILE
    metrics = evaluate_frame(model, valid, truth_path=truth)
    metrics.update({"n_train": int(len(train)), "n_valid": int(len(valid)), "trees": model.num_trees,
                    "valid_from": valid["ts"].min().isoformat() if len(valid) else None,
                    "train_seconds": round(time.perf_counter() - t0, 2)})
    model.metrics.update(metrics)

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    version = f"{stamp}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    path = Path(settings.artifact_dir) / "models" / MODEL_NAME / version
    model.save(path)
    job.check()                       # the lease is still ours: publish
    current = active_model(url, MODEL_NAME)
    ok, why, versus = head_to_head(model, valid, current)
    metrics["versus_active"] = versus
    row = register_model(url, MODEL_NAME, version, str(path), metrics=metrics, data_version=key)
    if ok:
        row = promote(url, MODEL_NAME, version)
        log.info("train_and_register: promoted %s (%s)", version, why)
    else:
        log.info("train_and_register: kept active %s over %s (%s)", current["version"], version, why)
    msg = (f"gbdt {version}: valid auc {metrics.get('auc')} gauc {metrics.get('gauc')} logloss "
           f"{metrics.get('logloss')} (popularity {metrics.get('popularity_auc')}, oracle "
           f"{metrics.get('oracle_auc')}) n={metrics['n']} in {time.perf_counter() - t0:.1f}s")
    log.info(msg)
    if progress:
        print(msg, flush=True)
    return row


__all__ = ["sample_weight", "train_gbdt", "GBDTModel", "LeafEncoder", "time_split", "evaluate_frame",
           "train_and_register", "DEFAULT_PARAMS"]

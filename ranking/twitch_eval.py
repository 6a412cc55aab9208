"""Offline evaluation on the real Twitch watches (``user_id, streamer_id, slot, community``).

Protocol (issue 2, item 9; the same as ``shared/tools/twitch_reference.py``):

- every TEST row (user u watched streamer s in slot t) is a query; its candidates are the streamers
  seen live at t in the TEST file (a query with fewer than 2 candidates is skipped);
- models are fit on the TRAIN file only; the features of a query at slot t may use every event
  before t from BOTH files, never one at or after t;
- ``auc`` is the mean over queries of the positive's AUC against the query's other candidates;
  ``hr@k`` / ``mrr`` use rank = 1 + #candidates scoring strictly above the positive. Ties are broken
  exactly as the reference does: ``RandomState(seed).rand(n) * 1e-9`` drawn per test slot (in slot
  order, slots with >= 2 candidates) and added to every model's scores;
- ``gauc``: per user, over all that user's candidate rows (u, t, c) labelled "u watched c at t",
  impression-weighted over the users with both classes.

Models:
  popularity  total views of the candidate in the train file;
  repeat      times u watched the candidate before t (train + earlier test slots) + 1e-6·popularity;
  recent_viewers, repeat_then_recent   the reference's other heuristics (on request);
  ranker      the transformer ranker (ranking.model.ranker) in its Twitch form: one task (watch), no
              Biasnet (no positions), inputs = the same Feast statistics + GBDT leaves of the
              lightgbm model above + Metapath2vec vectors trained on the first 30 % of the train
              period's graph (the ranker trains on the rows after: ranking.graph_vectors.GRAPH_FRAC) +
              the user's recent streams (Feast ``user_recent``) for target attention; early stopping
              on the same last part of the train period.
  lightgbm    the product's feature path: both files mapped by :mod:`store.sources.twitch` (watch
              events at ``base + slot·10 min``), statistics by
              :func:`feature_repo.statistics.compute_statistics` with a 600 s bucket (one slot) written
              into a temporary Feast repo, point-in-time features through
              :func:`ranking.samples.training_frame` (``get_historical_features``) for the entity rows
              (user, candidate, slot start); :func:`ranking.gbdt.train_gbdt` fit on TRAIN-file queries
              (candidates = streamers live at t in the train file, label = watched), early stopping
              on the last part of the train period. Nothing is tuned on the test file.

``python -m ranking.twitch_eval TRAIN.csv TEST.csv [models]`` prints one JSON line per model.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .metrics import gauc as _gauc
from .metrics import query_metrics

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "streamer_id", "slot", "community"]
HEURISTICS = ("popularity", "repeat", "recent_viewers", "repeat_then_recent")
LEARNED = ("lightgbm", "ranker")
SLOT_S = 600                      # one Twitch slot = 10 minutes
RECENT_SLOTS = 6                  # recent_viewers: views of the candidate in slots t-6 .. t-1
MAX_TRAIN_ROWS = 300_000          # candidate rows of train-file queries fed to LightGBM (subsampled)
EARLY_STOP_FRAC = 0.15            # last part of the train period: early stopping
TWITCH_GBDT_PARAMS = {"num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 100}


def read_split(path) -> pd.DataFrame:
    df = path.copy() if isinstance(path, pd.DataFrame) else pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (need {COLUMNS})")
    df = df[COLUMNS].dropna()
    return df.astype({c: "int64" for c in COLUMNS}).reset_index(drop=True)


def _count_before(hist_key: np.ndarray, hist_slot: np.ndarray, q_key: np.ndarray, q_slot: np.ndarray) -> np.ndarray:
    """For each query (key, slot): the number of history rows with the same key and slot < q_slot."""
    if len(hist_key) == 0:
        return np.zeros(len(q_key), np.int64)
    span = int(max(hist_slot.max(), q_slot.max()) - min(hist_slot.min(), q_slot.min()) + 2)
    base = int(min(hist_slot.min(), q_slot.min()))
    h = np.sort(hist_key.astype(np.int64) * span + (hist_slot - base))
    q = q_key.astype(np.int64) * span + (q_slot - base)
    return np.searchsorted(h, q, side="left") - np.searchsorted(h, q_key.astype(np.int64) * span, side="left")


def _pair_codes(*frames_cols):
    """Joint int64 codes for (a, b) pairs across several (a, b) array tuples."""
    a = np.concatenate([x[0] for x in frames_cols]).astype(np.int64)
    b = np.concatenate([x[1] for x in frames_cols]).astype(np.int64)
    codes = pd.MultiIndex.from_arrays([a, b]).factorize()[0] if len(a) else np.zeros(0, np.int64)
    out, i = [], 0
    for x in frames_cols:
        out.append(codes[i:i + len(x[0])].astype(np.int64))
        i += len(x[0])
    return out


class Queries:
    """The candidate rows of a query file: ``cand`` (user, slot, stream, cpos, label, group) and,
    when ``per_query``, the query expansion ``qrows`` (query id, index into ``cand``, label)."""

    def __init__(self, df: pd.DataFrame, *, live_from: Optional[pd.DataFrame] = None, min_candidates: int = 2):
        src = df if live_from is None else live_from
        live = (src.groupby("slot")["streamer_id"].apply(lambda s: np.unique(s.to_numpy())))
        live = live[live.map(len) >= min_candidates]
        self.live = live
        lv = pd.DataFrame({"slot": np.repeat(live.index.to_numpy(), live.map(len).to_numpy()),
                           "stream_id": np.concatenate(live.to_list()) if len(live) else np.zeros(0, np.int64)})
        lv["cpos"] = lv.groupby("slot").cumcount()
        q = df[df["slot"].isin(live.index)].sort_values("slot", kind="stable").reset_index(drop=True)
        q["query"] = np.arange(len(q))
        self.queries = q
        groups = q[["user_id", "slot"]].drop_duplicates().reset_index(drop=True)
        groups["group"] = np.arange(len(groups))
        cand = groups.merge(lv, on="slot", how="inner").sort_values(["group", "cpos"], kind="stable")
        watched = q[["user_id", "slot", "streamer_id"]].drop_duplicates().rename(columns={"streamer_id": "stream_id"})
        watched["label"] = 1
        cand = cand.merge(watched, on=["user_id", "slot", "stream_id"], how="left")
        cand["label"] = cand["label"].fillna(0).astype(np.int64)
        self.cand = cand.reset_index(drop=True)
        self.cand["row"] = np.arange(len(self.cand))

    def expand(self) -> pd.DataFrame:
        """One row per (query, candidate): query id, candidate row index, label = candidate is the positive."""
        q = self.queries[["query", "user_id", "slot", "streamer_id"]]
        m = q.merge(self.cand[["user_id", "slot", "stream_id", "row"]], on=["user_id", "slot"], how="inner")
        m["label"] = (m["stream_id"] == m["streamer_id"]).astype(np.int64)
        return m[["query", "row", "label"]]


def reference_noise(test: pd.DataFrame, live: pd.Series, seed: int = 0) -> dict:
    """The reference's tie-break noise per test slot: RandomState(seed).rand(n) * 1e-9, drawn in slot
    order for the slots with >= 2 candidates."""
    rs = np.random.RandomState(seed)
    out = {}
    for t in np.unique(test["slot"].to_numpy()):
        if t in live.index:
            out[int(t)] = rs.rand(len(live[t])) * 1e-9
    return out


def heuristic_scores(train: pd.DataFrame, test: pd.DataFrame, cand: pd.DataFrame) -> dict[str, np.ndarray]:
    """Scores of the heuristics for the candidate rows (user_id, slot, stream_id)."""
    views = train["streamer_id"].value_counts()
    pop = cand["stream_id"].map(views).fillna(0).to_numpy(dtype=float)
    both = pd.concat([train, test], ignore_index=True)
    hu, qu = _pair_codes((both["user_id"].to_numpy(), both["streamer_id"].to_numpy()),
                         (cand["user_id"].to_numpy(), cand["stream_id"].to_numpy()))
    slots = cand["slot"].to_numpy()
    rep = _count_before(hu, both["slot"].to_numpy(), qu, slots).astype(float)
    sid_h, sid_q = _pair_codes((both["streamer_id"].to_numpy(), np.zeros(len(both))),
                               (cand["stream_id"].to_numpy(), np.zeros(len(cand))))
    hs = both["slot"].to_numpy()
    recent = (_count_before(sid_h, hs, sid_q, slots)
              - _count_before(sid_h, hs, sid_q, slots - RECENT_SLOTS)).astype(float)
    return {"popularity": pop, "repeat": rep + 1e-6 * pop, "recent_viewers": recent,
            "repeat_then_recent": rep * 1e3 + recent + 1e-6 * pop}


# ----------------------------------------------------------------------------- lightgbm on Feast features
def _feature_frame(settings, rows: pd.DataFrame, categories: pd.Series, base_us: int, lists: bool = False
                   ) -> pd.DataFrame:
    from .samples import training_frame
    us = base_us + rows["slot"].to_numpy(dtype=np.int64) * SLOT_S * 1_000_000
    ts = pd.Series(pd.to_datetime(us, unit="us", utc=True)).astype("datetime64[us, UTC]")
    labels = pd.DataFrame({
        "event_id": [f"q{i}" for i in range(len(rows))],
        "request_id": None,
        "user_id": rows["user_id"].to_numpy(dtype=np.int64),
        "stream_id": rows["stream_id"].to_numpy(dtype=np.int64),
        "category": rows["stream_id"].map(categories).astype("Int64").to_numpy(),
        "ts": ts.array,
        "position": pd.array([pd.NA] * len(rows), dtype="Int64"),
        "page": None,
        "click": rows["label"].to_numpy(dtype=np.int64),
        "purchase": 0,
        "stay_s": 0.0,
    })
    return training_frame(settings, labels, lists=True) if lists else training_frame(settings, labels)


class TwitchFrames:
    """What the learned models share: statistics in a temporary Feast repo, the train-file candidate
    rows (subsampled by (user, slot) group) split by time into ``fit`` / ``stop`` (early stopping),
    and the test candidates, each with point-in-time Feast features (+ the list columns when
    ``lists``). Built once per evaluation; nothing of the test file's labels enters a train row."""

    def __init__(self, train: pd.DataFrame, test: pd.DataFrame, test_cand: pd.DataFrame, *, work_dir: Path,
                 seed: int = 0, max_train_rows: int = MAX_TRAIN_ROWS, lists: bool = False):
        from feature_repo.parquet import write_statistics
        from feature_repo.statistics import compute_statistics
        from feature_repo.store import apply_definitions
        from store.settings import Settings
        from store.sources.twitch import BASE_TIME, load_twitch

        from .gbdt import time_split

        if max_train_rows < 1:
            raise ValueError(f"max_train_rows must be >= 1, got {max_train_rows}")
        t0 = time.perf_counter()
        self.settings = settings = Settings(home=Path(work_dir), stats_bucket_s=SLOT_S).ensure_dirs()
        data = load_twitch(pd.concat([train, test], ignore_index=True), base_time=BASE_TIME,
                           slot_minutes=SLOT_S // 60)
        self.data = data
        self.categories = categories = pd.Series(data.streams["category"].to_numpy(),
                                                 index=data.streams["stream_id"].to_numpy())
        frames = compute_statistics(data.events, data.streams, bucket_s=SLOT_S)
        rows_written = write_statistics(settings, frames)
        apply_definitions(settings)
        t1 = time.perf_counter()
        log.info("twitch: %d events -> statistics %s in %.1fs", len(data.events), rows_written, t1 - t0)
        self.base_us = base_us = int(pd.Timestamp(BASE_TIME).value // 1000)
        self.test_start = pd.Timestamp(base_us * 1000, tz="UTC") + pd.Timedelta(
            seconds=int(test["slot"].min()) * SLOT_S) if len(test) else None
        tq = Queries(train)
        groups = tq.cand["group"].to_numpy()
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        keep = np.ones(len(tq.cand), dtype=bool)
        if len(tq.cand) > max_train_rows and n_groups:
            rng = np.random.default_rng(seed)
            take = int(n_groups * max_train_rows / len(tq.cand))
            chosen = np.zeros(n_groups, dtype=bool)
            chosen[rng.choice(n_groups, size=take, replace=False)] = True
            keep = chosen[groups]
        train_rows = tq.cand[keep].reset_index(drop=True)
        self.train = _feature_frame(settings, train_rows, categories, base_us, lists=lists)
        self.fit, self.stop = time_split(self.train, EARLY_STOP_FRAC)
        t2 = time.perf_counter()
        log.info("twitch: %d train candidate rows ((user, slot) groups: %d of %d) with features in %.1fs",
                 len(self.train), len(np.unique(groups[keep])), n_groups, t2 - t1)
        self.test = _feature_frame(settings, test_cand, categories, base_us, lists=lists)
        self.seconds = {"statistics": t1 - t0, "train_features": t2 - t1,
                        "test_features": time.perf_counter() - t2}

    def train_events(self) -> pd.DataFrame:
        """The events of the train file only (before the first test slot)."""
        ev = self.data.events
        if self.test_start is None:
            return ev
        return ev[pd.to_datetime(ev["ts"], utc=True) < self.test_start]


def lightgbm_model(frames: TwitchFrames, *, seed: int = 0, params: Optional[dict] = None):
    from feature_repo.features import FEATURE_COLUMNS

    from .gbdt import train_gbdt
    p = {**TWITCH_GBDT_PARAMS, "seed": seed, **(params or {})}
    t0 = time.perf_counter()
    model = train_gbdt(frames.fit, frames.stop, list(FEATURE_COLUMNS), label="click", params=p, num_boost_round=500,
                       early_stopping=30)
    log.info("twitch lightgbm: %d trees (fit %d rows, early stop on %d rows) in %.1fs", model.num_trees,
             len(frames.fit), len(frames.stop), time.perf_counter() - t0)
    return model


def train_embeddings(frames: TwitchFrames, *, seed: int = 0, cut=None):
    """Metapath2vec on the train file's user–stream graph before ``cut`` (default: the whole train
    file; the test period's links stay unseen)."""
    from graph.build import build_graph
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    ev = frames.train_events()
    if cut is not None:
        ev = ev[pd.to_datetime(ev["ts"], utc=True) < cut]
    return train_metapath2vec(build_graph(ev, frames.data.catalog()), M2VConfig(seed=seed))


# the ranker's Twitch form: one task (watch = click), no positions (Biasnet off), no products
TWITCH_RANKER = {"tasks": ("ctr",), "use_biasnet": False}


def ranker_model(frames: TwitchFrames, *, seed: int = 0, gbdt=None, embeddings=None, overrides: Optional[dict] = None,
                 train_config=None, progress: bool = False):
    """The transformer ranker fit on ``frames.fit`` (early stopping on ``frames.stop``)."""
    from feature_repo.features import FEATURE_COLUMNS

    from .graph_vectors import graph_cut
    from .train import TrainConfig, train_on_frames
    cfg = train_config or TrainConfig(seed=seed, threads=2)
    fit = frames.fit
    if embeddings == "point_in_time":       # vectors from the events before the rows (ranking.graph_vectors.GRAPH_FRAC)
        cut = graph_cut(fit)
        embeddings = train_embeddings(frames, seed=seed, cut=cut)
        fit = fit[fit["ts"] >= cut].reset_index(drop=True)
    model, inputs, history = train_on_frames(
        fit, frames.stop, list(FEATURE_COLUMNS), catalog=frames.data.catalog(), embeddings=embeddings,
        gbdt=gbdt, ranker_overrides={**TWITCH_RANKER, **(overrides or {})}, train_config=cfg,
        extra_frames=[frames.test], progress=progress)
    return model, inputs, history


def ranker_scores(model, inputs, frame: pd.DataFrame) -> np.ndarray:
    from .evaluate import outputs
    return outputs(model, inputs, frame)["ctr_logit"]


# ----------------------------------------------------------------------------- evaluate
def _row(name: str, qm: dict, g: float) -> dict:
    r = lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 4)  # noqa: E731
    return {"model": name, "auc": r(qm["auc"]), "gauc": r(g), "hr@1": r(qm["hr@1"]), "hr@10": r(qm["hr@10"]),
            "mrr": r(qm["mrr"]), "n": int(qm["n"])}


def protocol_noise(test: pd.DataFrame, tq: Queries, seed: int = 0) -> np.ndarray:
    """The reference's tie-break noise for every candidate row of ``tq``."""
    by_slot = reference_noise(test, tq.live, seed=seed)
    cand = tq.cand
    return np.array([by_slot[int(t)][int(c)] for t, c in zip(cand["slot"].to_numpy(), cand["cpos"].to_numpy())],
                    dtype=float)


def protocol_rows(tq: Queries, scores: dict, models: Sequence[str], *, noise: np.ndarray,
                  print_rows: bool = False) -> list[dict]:
    """Metrics rows (auc, gauc, hr@1, hr@10, mrr, n) of candidate-row scores on the test queries."""
    cand, qrows = tq.cand, tq.expand()
    rows = []
    q_ids, q_row, q_lab = (qrows[c].to_numpy() for c in ("query", "row", "label"))
    for name in models:
        sc = np.asarray(scores[name], dtype=float) + noise
        qm = query_metrics(q_ids, q_lab, sc[q_row], ks=(1, 10))
        g = _gauc(cand["label"].to_numpy(), sc, cand["user_id"].to_numpy()) if len(cand) else float("nan")
        row = _row(name, qm, g)
        rows.append(row)
        if print_rows:
            print(json.dumps(row), flush=True)
    return rows


def evaluate_twitch(train_path, test_path, *, models: Sequence[str] = ("popularity", "repeat", "lightgbm"),
                    work_dir=None, seed: int = 0, max_train_rows: int = MAX_TRAIN_ROWS,
                    print_rows: bool = False) -> list[dict]:
    """Evaluate ``models`` on the protocol above; one metrics dict per model, in ``models`` order."""
    unknown = [m for m in models if m not in HEURISTICS + LEARNED]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {list(HEURISTICS + LEARNED)}")
    t0 = time.perf_counter()
    train, test = read_split(train_path), read_split(test_path)
    tq = Queries(test)
    cand = tq.cand
    noise = protocol_noise(test, tq, seed=0 if seed is None else seed)
    log.info("twitch evaluate: %d train rows, %d test rows -> %d queries, %d candidate rows (%.1fs)", len(train),
             len(test), len(tq.queries), len(cand), time.perf_counter() - t0)

    scores: dict[str, np.ndarray] = {}
    if any(m in HEURISTICS for m in models):
        scores.update(heuristic_scores(train, test, cand))
    tmp = None
    learned = [m for m in models if m in LEARNED]
    if learned:
        if work_dir is None:
            tmp = Path(tempfile.mkdtemp(prefix="streamrank-twitch-"))
        try:
            frames = TwitchFrames(train, test, cand, work_dir=Path(work_dir) if work_dir else tmp, seed=seed,
                                  max_train_rows=max_train_rows, lists="ranker" in learned)
            gbdt = lightgbm_model(frames, seed=seed)
            if "lightgbm" in models:
                scores["lightgbm"] = gbdt.predict(frames.test)
            if "ranker" in models:
                model, inputs, _ = ranker_model(frames, seed=seed, gbdt=gbdt, embeddings="point_in_time")
                scores["ranker"] = ranker_scores(model, inputs, frames.test)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    rows = protocol_rows(tq, scores, models, noise=noise, print_rows=print_rows)
    log.info("twitch evaluate: %d model(s) in %.1fs", len(models), time.perf_counter() - t0)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m ranking.twitch_eval TRAIN.csv TEST.csv [model,model,...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    models = tuple(argv[2].split(",")) if len(argv) > 2 else ("popularity", "repeat", "lightgbm")
    evaluate_twitch(argv[0], argv[1], models=models, print_rows=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

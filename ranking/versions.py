"""The ranker's versions and ablations, trained and scored on one task the same way: the harness of
``streamrank report`` (ranking.report) and of bench/quality.py (which adds the peer libraries).

Two tasks, the same split and the same features for every model:

* **twitch** (click = "watched"): the protocol of ``streamrank evaluate --source twitch``
  (ranking.twitch_eval): candidates = the streamers live in the test slot, metrics per query
  (auc, hr@k, mrr) and gauc. Train rows = the train file's candidate rows (subsampled by (user,
  slot)), the last 15 % of the train period for early stopping; Metapath2vec on the train file's
  graph only.
* **simulator** (click, conversion, stay): the built-in world ingested through the product path
  into a temporary home (SQLite + Feast), point-in-time features, the last 20 % of the impressions
  by time = test, the last 15 % of the rest = early stopping; metrics include ndcg@10 against the
  planted TRUE relevance.

Versions (seed 004's story): ``lightgbm`` = V1 (the product's GBDT), ``v2`` (dense + ids + GBDT
leaves + DIN target attention), ``v3`` (+ Metapath2vec), ``full`` = V4 (+ the live-stream
transformer); the other entries of :data:`OURS` are ablations and options. Metapath2vec vectors are
point in time: trained on the events of the first 30 % of the fit period
(``ranking.graph_vectors.GRAPH_FRAC``), and the variants that use them train on the rows after.
Hyper-parameters are fixed here (nothing is chosen on the test rows).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

OURS = {
    "v2": {"use_transformer": False, "use_target_attention": True, "m2v": False},
    "v3": {"use_transformer": False, "use_target_attention": True, "m2v": True},
    "full": {"use_transformer": True, "use_target_attention": True, "m2v": True},
    "full_shared_bottom": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                           "head": "shared_bottom"},
    "full_no_leaves": {"use_transformer": True, "use_target_attention": True, "m2v": True, "leaves": False},
    "full_pal": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                 "bias_form": "multiplicative"},
    "full_mlp_biasnet": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                         "bias_shape": "mlp"},
    "full_harvested": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                       "bias_form": "multiplicative", "bias_shape": "table"},
    # the fixed curve read off the randomised requests of the training period (ope.position_curve:
    # CTR by slot over the requests whose top K was shuffled; no relevance model, no confounding)
    "full_randomised": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                        "bias_form": "multiplicative", "bias_shape": "table", "curve": "randomised"},
    # no Biasnet: the click loss of a row clicked at slot k weighted by 1 / (that curve at k) (slot IPS)
    "full_slot_ips": {"use_transformer": True, "use_target_attention": True, "m2v": True, "use_biasnet": False,
                      "train": {"slot_ips": "randomised"}},
    # seed 004's other answer to position bias: the slot as an input in training, zeroed at serving
    "full_position_feature": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                              "use_biasnet": False, "position_feature": True},
    # seed 000's DCN-mix on the concatenated dense + embedded inputs (off in the default)
    # seed 001's time-difference encoding: the time since each recent stream on DIN's keys
    "full_time_gaps": {"use_transformer": True, "use_target_attention": True, "m2v": True, "time_gaps": True},
    # seed 001's fine-grained behaviour: the behaviour type (+ dwell bucket) of each recent stream / item token
    "full_behaviour": {"use_transformer": True, "use_target_attention": True, "m2v": True, "behaviour_tokens": True},
    "full_time_behaviour": {"use_transformer": True, "use_target_attention": True, "m2v": True, "time_gaps": True,
                            "behaviour_tokens": True},
    # the task weights learned (Kendall et al. 2018) or set per epoch by DWA (Liu et al. 2019) instead of fixed
    "full_uncertainty": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                         "train": {"loss_weights": "uncertainty"}},
    "full_dwa": {"use_transformer": True, "use_target_attention": True, "m2v": True, "train": {"loss_weights": "dwa"}},
    # seed 000's BST: a transformer over [recent streams; candidate] in DIN's place
    "full_bst": {"use_transformer": True, "use_target_attention": True, "m2v": True, "user_sequence": "bst"},
    # seed 004's per-position click towers (slot 1's at serving), no Biasnet
    "full_position_towers": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                             "use_biasnet": False, "position_towers": 10},
    "full_dcn": {"use_transformer": True, "use_target_attention": True, "m2v": True, "use_cross": True},
    # seed 001's precomputed item vectors (ranking.item_vectors; the simulator's: category + price)
    "full_item_vectors": {"use_transformer": True, "use_target_attention": True, "m2v": True, "item_vectors": True},
    "full_no_refit": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                      "train": {"refit_biasnet": False}},
    "full_no_biasnet": {"use_transformer": True, "use_target_attention": True, "m2v": True,
                        "use_biasnet": False},
}
EPOCHS = 4
BATCH = 1024
SIMULATOR_ONLY = ("full_no_biasnet", "full_pal", "full_mlp_biasnet", "full_harvested", "full_no_refit",
                  "full_randomised", "full_slot_ips", "full_position_feature", "full_position_towers",  # Biasnet variants
                  "full_item_vectors")        # Twitch has no item catalog
THREADS = 1               # one process per task: 2 tasks use the 2 cores better than 2 threads each


# ----------------------------------------------------------------------------- tasks
class Task:
    name: str
    fit: pd.DataFrame
    stop: pd.DataFrame
    test: pd.DataFrame
    catalog: dict
    graph_events: pd.DataFrame
    tasks: tuple
    truth = None

    def metrics(self, scores: dict) -> dict:      # scores: name -> dict(p_ctr, [p_ctcvr], [stay])
        raise NotImplementedError

    def harvested(self, inputs, config):
        """The curve harvested from the training period (fit + stop), as the training job's
        learned-vs-harvested check reads it (``config``: the ranker's, for the table size); once
        per task (the same pages and sizes for every variant)."""
        if not hasattr(self, "_harvested"):
            from ranking.position_bias import harvest_from_frame
            self._harvested = harvest_from_frame(pd.concat([self.fit, self.stop], ignore_index=True), inputs.pages,
                                                 n_positions=config.n_positions, n_pages=config.n_pages)
        return self._harvested


class TwitchTask(Task):
    def __init__(self, path: str, split_slot: int, work_dir: Path, seed: int = 0, max_train_rows: int = 100_000):
        from ranking.twitch_eval import Queries, TwitchFrames, protocol_noise, read_split
        df = read_split(path)
        train, test = df[df.slot < split_slot].reset_index(drop=True), df[df.slot >= split_slot].reset_index(drop=True)
        self.tq = Queries(test)
        self.noise = protocol_noise(test, self.tq, seed=0)
        frames = TwitchFrames(train, test, self.tq.cand, work_dir=work_dir, seed=seed, lists=True,
                              max_train_rows=max_train_rows)
        self.name, self.tasks = "twitch", ("click",)
        self.fit, self.stop, self.test = frames.fit, frames.stop, frames.test
        self.catalog = frames.data.catalog()
        self.graph_events = frames.train_events()

    def metrics(self, out: dict) -> dict:
        from ranking.twitch_eval import protocol_rows
        row = protocol_rows(self.tq, {"m": out["score"]}, ["m"], noise=self.noise)[0]
        return {k: row[k] for k in ("auc", "gauc", "hr@1", "hr@10", "mrr")}


class SimulatorTask(Task):
    def __init__(self, work_dir: Path, sim_seed: int = 0, days: float = 14, end: str = "2026-01-01T00:00:00+00:00",
                 explore_rate: float = 0.2, requests_per_day: int = 1500):
        from feature_repo.statistics_job import run_statistics
        from ranking.gbdt import time_split
        from ranking.samples import impression_labels, training_frame
        from store.ingest import load_catalog, load_events
        from store.settings import Settings
        from store.sources import TRUTH_FILE, ingest_source
        from store.sources.simulator import SimConfig, simulate

        end_t = datetime.fromisoformat(end)
        settings = Settings(home=Path(work_dir)).ensure_dirs()
        data = simulate(SimConfig(seed=sim_seed, days=days, end=end_t, explore_rate=explore_rate,
                                  requests_per_day=requests_per_day))
        ingest_source(settings, data, progress=False)
        run_statistics(settings, end=end_t, progress=False)
        events = load_events(settings.database_url, end=end_t)
        self.catalog = load_catalog(settings.database_url)
        labels = impression_labels(events, self.catalog.get("streams"))
        frame = training_frame(settings, labels, lists=True)
        train, self.test = time_split(frame, 0.2)
        self.fit, self.stop = time_split(train, 0.15)
        cut = self.test["ts"].min()
        self.graph_events = events[pd.to_datetime(events["ts"], utc=True) < cut]
        self.truth = pd.read_parquet(Path(settings.artifact_dir) / TRUTH_FILE)
        self.randomised_curve_info = None
        self.name, self.tasks = "simulator", ("click", "purchase", "stay")

    def curve_floor(self) -> dict:
        """How well the planted position curve can be read off this world's clicks at all (max abs
        error vs the truth, slots 1..10, all rows): with each impression's TRUE relevance known
        (clicks / relevance per slot), from the exploration slates alone (CTR per slot), and each
        Biasnet form fitted alone on the true relevance, its curve read on one population for every
        slot (``position_curve``) and on each slot's own impressions (``_shown``)."""
        from store.sources.simulator import examination
        f = pd.concat([self.fit, self.stop, self.test], ignore_index=True)
        tr = self.truth.drop_duplicates("event_id").set_index("event_id").loc[f["event_id"].astype(str)]
        pos, y = pd.to_numeric(f["position"]).to_numpy(), f["click"].to_numpy(float)
        true = examination(np.arange(1, 11)) / examination(1)
        known = pd.DataFrame({"y": y, "rel": tr["relevance"].to_numpy(float), "pos": pos}).groupby("pos").sum()
        c_known = (known["y"] / known["rel"]).reindex(range(1, 11)).to_numpy()
        rnd = tr["randomized"].to_numpy(bool)
        c_rnd = pd.Series(y[rnd]).groupby(pos[rnd]).mean().reindex(range(1, 11)).to_numpy()
        out = {"known_relevance": round(float(np.nanmax(np.abs(c_known / c_known[0] - true))), 4),
               "exploration_slates": round(float(np.nanmax(np.abs(c_rnd / c_rnd[0] - true))), 4)}
        # what each Biasnet form reaches at best: the monotone tower fitted alone (maximum
        # likelihood) with the TRUE relevance as the debiased logit — the form's own error floor
        import torch
        from ranking.model.biasnet import BiasNet
        from ranking.model.ranker import position_curve, position_curve_shown
        from ranking.refit import fit_biasnet_to_logits
        rel = np.clip(tr["relevance"].to_numpy(float), 1e-6, 1 - 1e-6)
        a = torch.from_numpy(np.log(rel) - np.log1p(-rel)).float()                       # [N]
        p_t, y_t = torch.from_numpy(pos).long(), torch.from_numpy(y).float()            # [N]
        for form in BiasNet.FORMS:
            torch.manual_seed(0)
            tower = BiasNet(form=form, shape="monotone")
            fit_biasnet_to_logits(tower, a, p_t, None, y_t, form)
            curve = position_curve(tower, a).numpy()                                      # [10]
            out[f"true_relevance_{form}_tower"] = round(float(np.max(np.abs(curve - true))), 4)
            shown = position_curve_shown(tower, a, p_t).numpy()                           # [10]
            out[f"true_relevance_{form}_tower_shown"] = round(float(np.max(np.abs(shown - true))), 4)
        return out

    def randomised_curve(self) -> np.ndarray:
        """Examination by slot (relative to slot 1) from the randomised requests before the test
        period: ``streamrank position-curve``'s estimator (ope.position_curve), slots 1..10."""
        if self.randomised_curve_info is None:
            from ope.position_curve import impressions_with_clicks, position_curve
            from store.sources.simulator import examination
            imps = impressions_with_clicks(self.graph_events)
            _, rows = position_curve(imps, method="randomised", max_position=10, n_boot=0)
            curve = np.array([r["examination"] if r["examination"] is not None else np.nan for r in rows])
            true = examination(np.arange(1, 11)) / examination(1)
            self.randomised_curve_info = {
                "curve": curve, "requests": int(imps.loc[imps["policy"] == "randomised", "request_id"].nunique()),
                "max_err": round(float(np.nanmax(np.abs(curve - true))), 4)}
            log.info("position curve from %d randomised requests: max abs error %.4f", self.randomised_curve_info["requests"],
                     self.randomised_curve_info["max_err"])
        return self.randomised_curve_info["curve"]

    def metrics(self, out: dict) -> dict:
        from ranking.evaluate import ndcg_at_k
        from ranking.metrics import auc, gauc
        t = self.test
        y, b = t["click"].to_numpy(), t["purchase"].to_numpy()
        m = {"auc": auc(y, out["score"]), "gauc": gauc(y, out["score"], t["user_id"].to_numpy())}
        if out.get("ctcvr") is not None:
            m["cvr_auc"] = auc(b, out["ctcvr"])
        if out.get("stay") is not None:
            c = y > 0
            target = np.log1p(np.maximum(t["stay_s"].to_numpy(float)[c], 0))
            m["stay_rmse"] = float(np.sqrt(np.mean((np.asarray(out["stay"])[c] - target) ** 2)))
        tr = self.truth.drop_duplicates("event_id").set_index("event_id")
        ids = t["event_id"].astype(str)
        hit = ids.isin(tr.index).to_numpy()
        if hit.any():
            rel = tr.loc[ids[hit], "relevance"].to_numpy(float)
            m["ndcg@10_true"] = ndcg_at_k(t["request_id"].to_numpy()[hit], np.asarray(out["score"])[hit], rel)
            # the exploration slates: positions independent of every input, so the observed
            # clicks there rank models by relevance (the usual unbiased offline test)
            rnd = np.zeros(len(t), dtype=bool)
            rnd[hit] = tr.loc[ids[hit], "randomized"].to_numpy(bool)
            if rnd.any() and 0 < y[rnd].sum() < rnd.sum():
                m["auc_random_slates"] = auc(y[rnd], np.asarray(out["score"])[rnd])
        return {k: (round(float(v), 4) if v is not None else None) for k, v in m.items()}


# ----------------------------------------------------------------------------- models
def run_lightgbm(task: Task, seed: int):
    from feature_repo.features import FEATURE_COLUMNS
    from ranking.gbdt import sample_weight, train_gbdt
    from ranking.twitch_eval import TWITCH_GBDT_PARAMS
    params = {**(TWITCH_GBDT_PARAMS if task.name == "twitch" else {}), "seed": seed}
    weight = sample_weight(task.fit) if task.name != "twitch" else None
    model = train_gbdt(task.fit, task.stop, list(FEATURE_COLUMNS), label="click", weight=weight, params=params,
                       num_boost_round=500, early_stopping=30)
    return model, {"score": model.predict(task.test)}


def set_graph_cut(task: Task) -> Task:
    """Metapath2vec vectors are trained on the events before ``task.graph_cut`` (point in time:
    the ranker trains on the fit rows after it, ``ranking.graph_vectors.graph_cut``)."""
    from ranking.graph_vectors import graph_cut
    task.graph_cut = graph_cut(task.fit)
    return task


def seed_inputs(task: Task, seed: int):
    """What every model of one seed shares: the LightGBM V1 (its leaves feed our ranker) with its
    test outputs, and the Metapath2vec vectors of the events before ``task.graph_cut``."""
    from graph.build import build_graph
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    gbdt, o = run_lightgbm(task, seed)
    ge = task.graph_events
    ge = ge[pd.to_datetime(ge["ts"], utc=True) < task.graph_cut]
    emb = train_metapath2vec(build_graph(ge, task.catalog), M2VConfig(seed=seed))
    return gbdt, o, emb


def run_ours(task: Task, variant: str, seed: int, gbdt, emb, epochs: int):
    """Train one of :data:`OURS` on ``task`` (one seed); ``(model, inputs, test outputs, extra
    figures, training history)``."""
    from feature_repo.features import FEATURE_COLUMNS
    from ranking.evaluate import evaluate_ranker, outputs
    from ranking.train import TrainConfig, train_on_frames
    spec = dict(OURS[variant])
    use_m2v = spec.pop("m2v")
    use_leaves = spec.pop("leaves", True)
    item_vectors = None
    if spec.pop("item_vectors", False):
        from ranking.item_vectors import simulator_item_vectors
        iv = simulator_item_vectors(task.catalog["items"], seed=0)   # one file: a given input
        item_vectors = (iv["item_id"].to_numpy(), iv.drop(columns="item_id").to_numpy(dtype=np.float32))
    train_overrides = dict(spec.pop("train", {}))
    curve_source = spec.pop("curve", None)
    if train_overrides.get("slot_ips") == "randomised":
        curve_source = "randomised"
        train_overrides["slot_ips"] = tuple(float(v) for v in task.randomised_curve())
    overrides = dict(spec)
    if task.name == "twitch":
        overrides.update(tasks=("ctr",), use_biasnet=False)
    cfg = TrainConfig(seed=seed, epochs=epochs, batch_size=BATCH, threads=THREADS, **train_overrides)
    t0 = time.perf_counter()
    fit = task.fit
    if use_m2v:               # point-in-time vectors: the ranker trains on the rows after the graph
        fit = fit[fit["ts"] >= task.graph_cut].reset_index(drop=True)
    model, inputs, hist = train_on_frames(fit, task.stop, list(FEATURE_COLUMNS), catalog=task.catalog,
                                          embeddings=emb if use_m2v else None, gbdt=gbdt if use_leaves else None,
                                          item_vectors=item_vectors,
                                          ranker_overrides=overrides, train_config=cfg, extra_frames=[task.test],
                                          position_frame=pd.concat([task.fit, task.stop], ignore_index=True),
                                          position_curve=task.randomised_curve() if curve_source == "randomised"
                                          and overrides.get("bias_shape") == "table" else None)
    secs = time.perf_counter() - t0
    o = outputs(model, inputs, task.test)
    res = {"score": o["ctr_logit"], "ctcvr": o.get("p_ctcvr"), "stay": o.get("stay")}
    extra = {"train_seconds": round(secs, 1), "epochs": len(hist["epochs"]), "best_epoch": hist["best_epoch"]}
    if curve_source == "randomised":
        extra["randomised_requests"] = task.randomised_curve_info["requests"]
        extra["randomised_curve_max_err"] = task.randomised_curve_info["max_err"]
    if task.truth is not None and model.biasnet is not None:
        ev = evaluate_ranker(model, inputs, task.test, truth=task.truth, out=o, harvested=task.harvested(inputs, model.config))
        extra["position_curve_max_err"] = ev.get("position_curve_max_err")
        extra["position_curve_max_err_shown"] = ev.get("position_curve_max_err_shown")
        # the training job's truth-free check: how far the learned curve is from the harvested one
        extra["position_curve_learned_vs_harvested"] = ev.get("position_curve_learned_vs_harvested")
    return model, inputs, res, extra, hist


# ----------------------------------------------------------------------------- tables
def summarise(results: list[dict]) -> list[dict]:
    rows = []
    df = pd.DataFrame(results)
    metric_cols = [c for c in df.columns if c not in ("task", "model", "seed", "library", "train_seconds",
                                                        "epochs", "best_epoch")]
    for (task, model), g in df.groupby(["task", "model"], sort=False):
        row = {"task": task, "model": model, "seeds": int(len(g))}
        for c in metric_cols:
            v = pd.to_numeric(g[c], errors="coerce").dropna()
            if len(v):
                row[c] = (round(float(v.mean()), 4), round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4))
        if "train_seconds" in g:
            row["train_s"] = round(float(pd.to_numeric(g["train_seconds"], errors="coerce").mean()), 1)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == task]
        cols = [c for c in dict.fromkeys(k for r in rs for k in r) if c not in ("task", "model", "seeds", "train_s")]
        out.append(f"\n**{task}** (mean ± std over seeds)\n")
        out.append("| model | " + " | ".join(cols) + " | seeds | train s |")
        out.append("|---" * (len(cols) + 3) + "|")
        for r in rs:
            cells = [f"{r[c][0]:.4f} ± {r[c][1]:.4f}" if c in r else "–" for c in cols]
            out.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['seeds']} | {r.get('train_s', '–')} |")
    return "\n".join(out)



__all__ = ["OURS", "EPOCHS", "BATCH", "THREADS", "SIMULATOR_ONLY", "Task", "TwitchTask", "SimulatorTask",
           "run_lightgbm", "set_graph_cut", "seed_inputs", "run_ours", "summarise", "markdown"]

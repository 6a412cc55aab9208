r"""The retrieval job: train the two-tower on the event log, gate it, register it (``two_tower``).

1. key = ``store.ingest.training_key`` (+ the config); a key already trained is a no-op; two
   schedulers on one key run it once (``store.jobs.job_run``).
2. watches = the ``click`` / ``watch`` events before ``end``; histories are the user's last
   distinct streams at their latest time (what Feast's ``user_recent`` serves online), targets
   the session starts (:mod:`retrieval.data`).
3. the newest ``valid_frac`` of the session starts (by time) are the held-out window; the model
   trains on the rest (its own early stopping on the last tenth of those).
4. stream features: category (catalog), statistics of the training window, the active
   Metapath2vec version's vectors (none when there is no active version).
5. **gate**: the held-out recall@50 (:func:`gate_k`: a tenth of a smaller catalog) over the whole catalog, head to head with the active version
   on the same queries (its own stream rows; a target it does not know is a miss); the new
   version is promoted when it is not worse, or when there is none.
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MODEL_NAME = "two_tower"
WATCH_TYPES = ("click", "watch")
GATE_K = 50


def _frame(events: pd.DataFrame) -> pd.DataFrame:
    ev = events[events["type"].isin(WATCH_TYPES) & events["stream_id"].notna()]
    ts = pd.to_datetime(ev["ts"], utc=True).astype("datetime64[ns, UTC]")
    return pd.DataFrame({"user_id": ev["user_id"].astype("int64").to_numpy(),
                         "stream_id": ev["stream_id"].astype("int64").to_numpy(),
                         "ts": ts.astype("int64").to_numpy() / 1e9})


def gate_k(n_streams: int) -> int:
    """recall@k of the gate: 50, or a tenth of a smaller catalog (recall@50 of 40 streams says nothing)."""
    return max(1, min(GATE_K, n_streams // 10))


def held_out_recall(rm, batch_user, batch_stream, batch_t, history, k: int = GATE_K) -> float:
    """recall@k over ``rm``'s whole catalog of the held-out queries (each query's history from
    ``history``, the user's events before t), in ``rm``'s own vocabulary."""
    from .data import query_batch
    from .train import recall_at
    q = query_batch(history, rm.vocab, batch_user, batch_stream, batch_t, seq_len=rm.cfg.seq_len,
                    long_len=rm.cfg.long_len)
    return recall_at(rm.model, q, k)


def train_and_register_retrieval(settings, *, end: Optional[datetime] = None, valid_frac: float = 0.1,
                                 epochs: int = 6, interests: int = 1, progress: bool = False) -> dict:
    """Steps 1–5 of the module docstring; the registry row (``"skipped": True`` when the key was done)."""
    from store.ingest import load_catalog, load_events, training_key
    from store.jobs import job_run
    from store.registry import already_trained

    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    url = settings.database_url
    key = training_key(url, end) + f"#e{epochs}k{interests}f{valid_frac:g}"
    done = already_trained(url, MODEL_NAME, key)
    if done is not None:
        return dict(done, skipped=True)
    with job_run(url, "train_retrieval", key) as job:
        if job.skip:
            return dict(already_trained(url, MODEL_NAME, key, job.detail) or {}, skipped=True)
        row = _train(settings, key, job, load_events(url, end=end, types=list(WATCH_TYPES)), load_catalog(url),
                     valid_frac=valid_frac, epochs=epochs, interests=interests, progress=progress)
        job.detail.update({"version": row["version"], "artifact_path": row["artifact_path"]})
        return dict(row, skipped=False)


def _train(settings, key, job, events, catalog, *, valid_frac, epochs, interests, progress) -> dict:
    import torch

    from graph.artifacts import load_active as load_active_embeddings
    from store.registry import active_model, promote, register_model

    from .artifact import RetrievalModel, save
    from .data import Sessions, Vocab, category_rows, events_as_rows, stream_stats, training_queries
    from .model import TwoTowerConfig, build
    from .train import TrainConfig, fit

    t0 = time.perf_counter()
    url = settings.database_url
    w = _frame(events)
    if len(w) < 50:
        raise ValueError(f"not enough watches to train the retrieval model ({len(w)} click/watch events)")
    streams = catalog.get("streams")
    ids = np.unique(np.r_[w["stream_id"].to_numpy(), streams["stream_id"].to_numpy() if streams is not None else []])
    vocab = Vocab(ids.astype(np.int64))
    n = len(vocab)
    sessions = Sessions.from_watches(w["user_id"], w["stream_id"], w["ts"])
    history = events_as_rows(w["user_id"], w["stream_id"], w["ts"])
    cut = float(np.quantile(sessions.start, 1 - valid_frac))
    train_ev = w[w["ts"] < cut]
    train_targets = Sessions.from_watches(train_ev["user_id"], train_ev["stream_id"], train_ev["ts"])
    held = sessions.start >= cut
    # features: category rows, statistics of the training window, graph vectors of the active version
    category, n_cat = np.zeros(n + 1, np.int64), 1
    if streams is not None and len(streams) and "category" in streams.columns:
        cats = streams.dropna(subset=["category"])
        category, n_cat = category_rows(vocab, cats["stream_id"], cats["category"].astype("int64"))
    _, stats = stream_stats(vocab, train_targets, train_ev["user_id"], train_ev["stream_id"])
    emb = load_active_embeddings(url)
    graph = None
    if emb is not None and "stream" in emb.tables:
        graph = np.zeros((n + 1, emb.dim), np.float32)
        graph[1:] = emb.lookup("stream", vocab.ids)
        graph /= np.linalg.norm(graph, axis=1, keepdims=True) + 1e-9
    cfg = TwoTowerConfig(n_streams=n, n_categories=n_cat, seq_len=20, long_len=20, interests=interests,
                         graph_dim=0 if graph is None else graph.shape[1], n_stats=2)
    torch.manual_seed(0)
    model = build(cfg, category=category, graph=graph, stats=stats)
    train_q = training_queries(train_targets, vocab, history=events_as_rows(train_ev["user_id"], train_ev["stream_id"],
                                                                           train_ev["ts"]))
    info = fit(model, train_q, TrainConfig(epochs=epochs, num_threads=1),
               progress=(lambda r: print(f"two_tower {r}", flush=True)) if progress else None)
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + hashlib.sha1(key.encode()).hexdigest()[:8]
    path = Path(settings.artifact_dir) / "retrieval" / version
    meta = {"version": version, "data_version": key, "embeddings": emb.meta.get("version") if emb is not None else None,
            "train": info, "cut": cut}
    save(model, vocab, path, meta)
    candidate = RetrievalModel(path)
    hu, hs, ht = sessions.user[held], sessions.stream[held], sessions.start[held]
    k = gate_k(n)
    mine = held_out_recall(candidate, hu, hs, ht, history, k)
    metrics = {"gate_k": k, f"recall@{k}": round(mine, 4), "n_valid": int(held.sum()), "n_train": int(len(train_q)),
               "streams": n, "valid_from": datetime.fromtimestamp(cut, timezone.utc).isoformat(),
               "best_epoch": info["best_epoch"], "embeddings": meta["embeddings"],
               "seconds": round(time.perf_counter() - t0, 2)}
    current = active_model(url, MODEL_NAME)
    ok, why = True, "no active version"
    if current is not None:
        try:
            theirs = held_out_recall(RetrievalModel(current["artifact_path"]), hu, hs, ht, history, k)
        except Exception as exc:                  # a broken active version: nothing to defend
            ok, why = True, f"active {current['version']} cannot be scored ({type(exc).__name__})"
        else:
            metrics["versus_active"] = {"version": current["version"], "n": int(held.sum()),
                                        f"recall@{k}": round(mine, 4), f"active_recall@{k}": round(theirs, 4)}
            ok = mine >= theirs
            why = (f"held-out recall@{k} {mine:.4f} {'>=' if ok else '<'} active's {theirs:.4f} on the same "
                   f"{int(held.sum())} queries")
    metrics["gate"] = {"passed": ok, "why": why}
    job.check()
    row = register_model(url, MODEL_NAME, version, str(path), metrics=metrics, data_version=key)
    if ok:
        row = promote(url, MODEL_NAME, version)
    msg = f"two_tower {version}: held-out recall@{k} {mine:.4f} ({'promoted' if ok else 'NOT promoted'}: {why})"
    log.info(msg)
    if progress:
        print(msg, flush=True)
    return row


__all__ = ["MODEL_NAME", "train_and_register_retrieval", "held_out_recall"]

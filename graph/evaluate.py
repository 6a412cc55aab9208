r"""Held-out link prediction for the graph embeddings (``streamrank evaluate-graph``).

Protocol:

1. split the user–stream interactions (``watch`` / ``click`` events) by time: the last
   ``holdout_frac`` of them (by ``ts``; the cut is the ``1 - holdout_frac`` quantile, every event
   at or after it is held out) are the test period, everything before trains;
2. test positives: the distinct (user, stream) pairs of the test period that do NOT occur in the
   training period (new links), for users with at least one training interaction;
3. each positive gets ``num_negatives`` negatives: the same user with streams drawn uniformly from
   the graph's streams that the user never interacted with (train or test);
4. the graph is built from the training period only (``end = cut``; the catalog is kept, so a
   stream first seen in the test period is a node with no edge and gets its fallback vector) and
   the embeddings are trained on it;
5. scores: ``metapath2vec`` = :math:`\mathbf{z}_u^\top\mathbf{z}_s`; ``degree_product`` =
   :math:`\deg(u)\cdot\deg(s)` in the training graph (distinct neighbours); ``popularity`` =
   training interactions of the stream (events, not pairs).

Metrics per model: ``auc`` (pooled ROC AUC of all positives vs all negatives, ties ½),
``auc_per_query`` (mean over positives of the AUC against its own negatives), ``hr@10`` and
``mrr`` (rank of the positive among its negatives; ties are broken uniformly at random, in
expectation). Nothing is tuned on the test period.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

WATCH_TYPES = ("watch", "click")


@dataclass
class LinkTask:
    """The held-out task in contiguous ids of the TRAIN graph.

    Attributes:
        users (np.ndarray): ``[n]`` user row of each positive.
        pos (np.ndarray): ``[n]`` held-out stream row.
        neg (np.ndarray): ``[n, K]`` negative stream rows.
        cut (pd.Timestamp): first held-out time.
        info (dict): counts.
    """
    users: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    cut: pd.Timestamp
    info: dict


def time_cut(events: pd.DataFrame, holdout_frac: float = 0.2) -> pd.Timestamp:
    """The first held-out time: the ``1 - holdout_frac`` quantile of the user–stream interactions."""
    if not 0 < holdout_frac < 1:
        raise ValueError("holdout_frac must be in (0, 1)")
    ts = pd.to_datetime(events.loc[events["type"].isin(WATCH_TYPES), "ts"], utc=True).sort_values()
    if len(ts) < 2:
        raise ValueError("need at least 2 watch/click events to hold out a part")
    cut = ts.iloc[min(int(len(ts) * (1 - holdout_frac)), len(ts) - 1)]
    if cut <= ts.iloc[0]:
        raise ValueError("every interaction has the same time: cannot split by time")
    return cut


def make_task(events: pd.DataFrame, train_graph, cut, *, num_negatives: int = 100, seed: int = 0) -> LinkTask:
    """Held-out positives (new pairs at or after ``cut``) and their sampled negatives."""
    from .build import to_contiguous
    ev = events[events["type"].isin(WATCH_TYPES)].dropna(subset=["stream_id"])
    ts = pd.to_datetime(ev["ts"], utc=True)
    u = ev["user_id"].to_numpy(np.int64)
    s = ev["stream_id"].to_numpy(np.int64)
    test = (ts >= cut).to_numpy()
    n_s = int(train_graph.num_nodes["stream"])
    uid = to_contiguous(train_graph.id_maps["user"], u)
    sid = to_contiguous(train_graph.id_maps["stream"], s)
    ok = (uid >= 0) & (sid >= 0)
    key = uid.astype(np.int64) * max(n_s, 1) + sid
    train_keys = np.unique(key[~test & ok])
    train_users = np.unique(uid[~test & ok])
    test_keys = np.unique(key[test & ok])
    new = test_keys[~np.isin(test_keys, train_keys)]
    pu, ps = new // max(n_s, 1), new % max(n_s, 1)
    keep = np.isin(pu, train_users)
    pu, ps = pu[keep], ps[keep]
    # negatives: uniform streams the user never interacted with (train or test)
    seen = np.unique(key[ok])
    rng = np.random.default_rng(seed)
    K = int(num_negatives)
    neg = rng.integers(0, n_s, size=(len(pu), K))
    for _ in range(100):
        bad = np.isin(pu[:, None] * n_s + neg, seen)
        if not bad.any():
            break
        neg[bad] = rng.integers(0, n_s, size=int(bad.sum()))
    else:                                            # a user who watched (almost) everything
        keep = ~np.isin(pu[:, None] * n_s + neg, seen).any(axis=1)
        pu, ps, neg = pu[keep], ps[keep], neg[keep]
    info = {"cut": cut.isoformat(), "train_interactions": int((~test).sum()), "test_interactions": int(test.sum()),
            "test_pairs": int(len(test_keys)), "new_pairs": int(len(new)), "positives": int(len(pu)),
            "negatives_per_positive": K, "test_users": int(len(np.unique(pu)))}
    return LinkTask(users=pu, pos=ps, neg=neg, cut=cut, info=info)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Pooled ROC AUC (Mann-Whitney, ties ½)."""
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[pos, neg]
    ranks = pd.Series(s).rank(method="average").to_numpy()
    n1, n0 = len(pos), len(neg)
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def score_task(task: LinkTask, score: Callable[[np.ndarray, np.ndarray], np.ndarray], ks=(10,)) -> dict:
    """Metrics of one scorer ``score(user_rows, stream_rows) -> scores`` (same length)."""
    n, K = task.neg.shape
    if n == 0:
        return {"auc": float("nan"), "auc_per_query": float("nan"), **{f"hr@{k}": float("nan") for k in ks},
                "mrr": float("nan"), "n": 0}
    sp = np.asarray(score(task.users, task.pos), dtype=np.float64)
    sn = np.asarray(score(np.repeat(task.users, K), task.neg.reshape(-1)), dtype=np.float64).reshape(n, K)
    above = (sn > sp[:, None]).sum(1)
    tied = (sn == sp[:, None]).sum(1)
    below = K - above - tied
    out = {"auc": round(_auc(sp, sn.reshape(-1)), 4),
           "auc_per_query": round(float(np.mean((below + 0.5 * tied) / K)), 4)}
    for k in ks:
        # P(rank <= k) with ties broken uniformly at random: rank = 1 + above + U{0..tied}
        out[f"hr@{k}"] = round(float(np.mean(np.clip((k - above) / (tied + 1), 0.0, 1.0))), 4)
    # E[1 / rank] = (H(above + tied + 1) - H(above)) / (tied + 1), H = harmonic numbers
    harmonic = np.r_[0.0, np.cumsum(1.0 / np.arange(1, K + 2))]
    out["mrr"] = round(float(np.mean((harmonic[above + tied + 1] - harmonic[above]) / (tied + 1))), 4)
    out["n"] = int(n)
    return out


def evaluate_link_prediction(events: pd.DataFrame, catalog=None, *, config=None, holdout_frac: float = 0.2,
                             num_negatives: int = 100, seed: int = 0, baselines: bool = True,
                             return_embeddings: bool = False,
                             progress: Optional[Callable[[dict], None]] = None) -> dict:
    r"""Train on the earlier part of the window, score held-out new user–stream links.

    Args:
        events (pd.DataFrame): the event log (``user_id, ts, type, stream_id, item_id``).
        catalog (dict or SourceData, optional): the catalog frames (see :func:`graph.build.build_graph`).
        config (M2VConfig, optional): training hyper-parameters (default ``M2VConfig()``).
        holdout_frac (float): share of the interactions (latest by time) held out.
        num_negatives (int): sampled negatives per held-out positive.
        seed (int): negative sampling seed.
        baselines (bool): also score ``degree_product`` and ``popularity``.
        return_embeddings (bool): add the trained :class:`~graph.artifacts.Embeddings` as ``"embeddings"``.
        progress (callable, optional): passed to :func:`~graph.metapath2vec.train_metapath2vec`.

    Returns:
        ``{"rows": [{"model": ..., "auc": ..., "auc_per_query": ..., "hr@10": ..., "mrr": ..., "n": ...},
        ...], "split": {...}, "graph": counts, "train": {...}}`` — the caller prints the rows as JSON.
    """
    from .build import WATCHES, build_graph
    from .metapath2vec import M2VConfig, train_metapath2vec

    t0 = time.perf_counter()
    cut = time_cut(events, holdout_frac)
    graph = build_graph(events, catalog, end=cut)
    task = make_task(events, graph, cut, num_negatives=num_negatives, seed=seed)
    t_build = time.perf_counter() - t0
    config = config or M2VConfig()
    t1 = time.perf_counter()
    emb = train_metapath2vec(graph, config, progress=progress)
    t_train = time.perf_counter() - t1
    zu, zs = emb.tables["user"], emb.tables["stream"]
    rows = [{"model": "metapath2vec", "loop": emb.meta["train"]["loop"],
             **score_task(task, lambda u, s: np.einsum("nd,nd->n", zu[u], zs[s]))}]
    if baselines:
        du = graph.degree("user", WATCHES)
        ds = graph.degree("stream", WATCHES)
        pop = graph.degree("stream", WATCHES, with_counts=True)
        rows.append({"model": "degree_product", **score_task(task, lambda u, s: du[u] * ds[s])})
        rows.append({"model": "popularity", **score_task(task, lambda u, s: pop[s])})
    train = emb.meta["train"]
    out = {"rows": rows, "split": task.info, "graph": graph.counts,
            "train": {"seconds": round(t_train, 2), "epoch_seconds": train["epoch_seconds"],
                      "walks_per_s": train["walks_per_s"], "final_loss": train["final_loss"],
                      "untrained": train["untrained"], "build_seconds": round(t_build, 2)},
            "config": {k: v for k, v in emb.meta["config"].items() if k != "metapaths"},
            "metapaths": ["-".join([mp[0][0]] + [et[2] for et in mp]) for mp in emb.meta["config"]["metapaths"]]}
    if return_embeddings:
        out["embeddings"] = emb
    return out


def json_rows(result: dict) -> list:
    """One flat JSON-able dict per model (the rows plus the split and training figures), for printing."""
    split = {k: result["split"][k] for k in ("cut", "positives", "test_users", "negatives_per_positive")}
    out = []
    for row in result["rows"]:
        tr = result["train"]
        extra = ({"train_seconds": tr["seconds"], "epoch_seconds": round(tr["epoch_seconds"], 3),
                  "walks_per_s": round(tr["walks_per_s"])} if row["model"] == "metapath2vec" else {})
        out.append({**row, **extra, **split})
    return out


def main(argv=None) -> int:
    """``python -m graph.evaluate --source twitch --path watches.csv [--epochs N] [--loop fast]``."""
    import argparse
    import json
    ap = argparse.ArgumentParser(description="held-out user-stream link prediction of the Metapath2vec embeddings")
    ap.add_argument("--source", default="simulator", choices=["simulator", "twitch", "events"])
    ap.add_argument("--path")
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--negatives", type=int, default=100)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--loop", choices=["fast", "reference"], default="fast")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from .metapath2vec import M2VConfig
    if a.source == "simulator":
        from store.sources.simulator import SimConfig, simulate
        data = simulate(SimConfig(seed=a.seed))
    elif a.source == "twitch":
        from store.sources.twitch import load_twitch
        data = load_twitch(a.path)
    else:
        from store.sources.events_file import load_events_file
        data = load_events_file(a.path)
    cfg = M2VConfig(loop=a.loop, seed=a.seed, **({"epochs": a.epochs} if a.epochs else {}))
    res = evaluate_link_prediction(data.events, data.catalog(), config=cfg, holdout_frac=a.holdout,
                                   num_negatives=a.negatives, seed=a.seed)
    for row in json_rows(res):
        print(json.dumps(row))
    return 0


__all__ = ["evaluate_link_prediction", "make_task", "score_task", "time_cut", "json_rows", "LinkTask"]


if __name__ == "__main__":
    import sys
    sys.exit(main())

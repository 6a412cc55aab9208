r"""Offline retrieval evaluation (``streamrank evaluate-retrieval``): every test watch is a query.

Protocol (LiveRec's all / new split, Rappaz et al., RecSys 2021):

- input: two frames of watches ``user_id, stream_id, ts`` (seconds) ``[, category]`` — TRAIN and
  TEST (Twitch: ``streamer_id`` → stream, ``slot·600`` → ts, ``community`` → category);
- each TEST row (u, s, t) is a query; its target s is ranked over the whole catalog (every stream
  of either file), or with ``live_only`` over the streams live at t (inside a live window when
  the caller gives them, else — Twitch — watched by anyone in the same slot);
- the history of a query is every watch of u before t, from BOTH files (never one at or after t);
  models are fit on TRAIN only; nothing is tuned on TEST;
- subsets: ``all``, and ``new`` — the target is a stream u never watched before t;
- metrics (:mod:`retrieval.metrics`): recall@10/50/200 and ndcg@10, ties broken uniformly at random
  in expectation; ``n`` queries.

Rows: ``popularity`` (TRAIN sessions of the stream), ``repeat`` (u's past streams by session count,
then recency; the rest tied), ``metapath2vec`` (:math:`z_u^\top z_s`, trained on the TRAIN graph),
``two_tower`` and ``two_tower_multi`` (:mod:`retrieval.model`, K = 4 interests), and
``candidates``: the merged channels the API uses (:func:`retrieval.candidates.merge`) — repeat
(at most 50), then the two-tower's nearest streams, then popularity, de-duplicated, at a 200
budget; ``repeat+popularity`` is the same merge without the two-tower (the baseline at that budget).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from .data import Sessions, Vocab, category_rows, events_as_rows, query_batch, stream_stats, training_queries
from .metrics import from_ranks, rank_stats, ranked_list_stats

log = logging.getLogger(__name__)

MODELS = ("popularity", "repeat", "repeat+popularity", "metapath2vec", "two_tower", "two_tower_multi", "candidates")
BUDGET = 200
REPEAT_MAX = 50            # the repeat channel's share of the budget at most


def read_twitch(path) -> pd.DataFrame:
    """Twitch watches (``user_id, streamer_id, slot, community``) as the protocol's frame."""
    df = path if isinstance(path, pd.DataFrame) else pd.read_csv(path)
    missing = [c for c in ("user_id", "streamer_id", "slot") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (need user_id, streamer_id, slot[, community])")
    out = pd.DataFrame({"user_id": df["user_id"].astype("int64"), "stream_id": df["streamer_id"].astype("int64"),
                        "ts": df["slot"].astype("int64") * 600.0})
    out["category"] = df["community"].astype("int64") if "community" in df.columns else 0
    return out.drop_duplicates(["user_id", "stream_id", "ts"]).sort_values("ts", kind="stable").reset_index(drop=True)


class World:
    """Everything the models share: vocabulary, sessions, per-stream features, the queries."""

    def __init__(self, train: pd.DataFrame, test: pd.DataFrame, *, seq_len: int = 20, long_len: int = 20,
                 live_windows: Optional[pd.DataFrame] = None):
        self.train, self.test = train, test
        both = pd.concat([train, test], ignore_index=True)
        self.vocab = Vocab(both["stream_id"].to_numpy())
        # histories: every watch (the last distinct streams at their latest time, as Feast serves
        # them); training targets: session starts (a 2-hour watch is one target, not twelve)
        self.sessions = events_as_rows(both["user_id"], both["stream_id"], both["ts"])
        self.train_events = events_as_rows(train["user_id"], train["stream_id"], train["ts"])
        self.train_sessions = Sessions.from_watches(train["user_id"], train["stream_id"], train["ts"])
        # categories: the stream's most frequent one in TRAIN (else in either file); rows 1..C
        src = train if len(train) else both
        top = (src.groupby(["stream_id", "category"]).size().rename("n").reset_index()
               .sort_values(["stream_id", "n"], ascending=[True, False]).drop_duplicates("stream_id"))
        self.category, self.n_categories = category_rows(self.vocab, top["stream_id"], top["category"],
                                                         universe=both["category"].to_numpy())
        # popularity and stats from TRAIN sessions only
        self.popularity, self.stats = stream_stats(self.vocab, self.train_sessions, train["user_id"], train["stream_id"])
        # queries: every TEST row, history from both files
        self.q = query_batch(self.sessions, self.vocab, test["user_id"], test["stream_id"], test["ts"],
                             seq_len=seq_len, long_len=long_len)
        self.q_user = test["user_id"].to_numpy(np.int64)
        self.q_ts = test["ts"].to_numpy(np.float64)
        seen = both.assign(row=self.vocab.rows(both["stream_id"]))
        first = seen.groupby(["user_id", "row"])["ts"].min()
        f = first.reindex(pd.MultiIndex.from_arrays([self.q_user, self.q.target])).to_numpy()
        self.is_new = ~(f < self.q_ts)
        self.seq_len, self.long_len = seq_len, long_len
        # live at t: inside one of ``live_windows`` (stream_id, start, end in seconds), else (Twitch's
        # 10-minute slots) watched by anyone at the same t in TEST
        self._windows = None
        if live_windows is not None:
            w = live_windows
            self._windows = (self.vocab.rows(w["stream_id"]), w["start"].to_numpy(np.float64),
                             w["end"].to_numpy(np.float64))
        self._live = test.assign(row=self.vocab.rows(test["stream_id"])).groupby("ts")["row"].apply(np.unique)

    @property
    def n_streams(self) -> int:
        return len(self.vocab)

    def live_mask(self, idx: np.ndarray) -> np.ndarray:
        """``[b, N]`` streams live at each query's t (columns = rows 1..N)."""
        m = np.zeros((len(idx), self.n_streams), bool)
        if self._windows is not None:
            rows, start, end = self._windows
            t = self.q_ts[idx][:, None]
            qi, wi = np.nonzero((start[None, :] <= t) & (t < end[None, :]) & (rows[None, :] > 0))
            m[qi, rows[wi] - 1] = True
            m[np.arange(len(idx)), self.q.target[idx] - 1] = True     # (a watch is proof of being live)
            return m
        for i, t in enumerate(self.q_ts[idx]):
            m[i, self._live.loc[t] - 1] = True
        return m

    def repeat_scores(self, idx: np.ndarray) -> np.ndarray:
        """``[b, N + 1]``: count of u's past watches of the stream + recency in [0, 1)."""
        lo, hi = self.sessions.before(self.q_user[idx], self.q_ts[idx])
        out = np.zeros((len(idx), self.n_streams + 1))
        for i, (a, b) in enumerate(zip(lo, hi)):
            if b > a:
                rows = self.vocab.rows(self.sessions.stream[a:b])
                np.add.at(out[i], rows, 1.0)
                # recency: later sessions overwrite earlier ones (a, ..., b-1 in time order)
                rec = np.zeros(self.n_streams + 1)
                rec[rows] = (np.arange(b - a) + 1) / (b - a + 1)
                out[i] += rec
        return out


def _metapath2vec(world: World, seed: int = 0):
    """Metapath2vec on the TRAIN watch graph: (user table lookup, stream vectors [N + 1, d])."""
    from graph.build import build_graph
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    tr = world.train
    events = pd.DataFrame({"user_id": tr["user_id"].to_numpy(), "ts": pd.to_datetime(tr["ts"], unit="s", utc=True),
                           "type": "watch", "stream_id": tr["stream_id"].to_numpy(),
                           "item_id": pd.array([pd.NA] * len(tr), dtype="Int64")})
    cat_of = world.category[world.vocab.rows(world.vocab.ids)]
    catalog = {"streams": pd.DataFrame({"stream_id": world.vocab.ids, "category": cat_of})}
    emb = train_metapath2vec(build_graph(events, catalog), M2VConfig(seed=seed))
    streams = np.zeros((world.n_streams + 1, emb.dim), np.float32)
    streams[1:] = emb.lookup("stream", world.vocab.ids)
    return emb, streams


def _two_tower(world: World, graph: Optional[np.ndarray], *, interests: int, seed: int,
               progress: Optional[Callable] = None, epochs: int = 8):
    from .model import TwoTowerConfig, build
    from .train import TrainConfig, fit
    g = None
    if graph is not None:
        g = graph / (np.linalg.norm(graph, axis=1, keepdims=True) + 1e-9)
    cfg = TwoTowerConfig(n_streams=world.n_streams, n_categories=world.n_categories, interests=interests,
                         seq_len=world.seq_len, long_len=world.long_len,
                         graph_dim=0 if g is None else g.shape[1], n_stats=world.stats.shape[1])
    import torch
    torch.manual_seed(seed)
    model = build(cfg, category=world.category, graph=g, stats=world.stats)
    train_q = training_queries(world.train_sessions, world.vocab, history=world.train_events, seq_len=world.seq_len,
                               long_len=world.long_len)
    info = fit(model, train_q, TrainConfig(seed=seed, epochs=epochs), progress=progress)
    return model, info


def _model_scores(model, world: World, idx: np.ndarray) -> np.ndarray:
    import torch

    from .train import user_vectors
    with torch.no_grad():
        streams = model.all_streams()
        users = user_vectors(model, world.q.take(idx))
        sc = model.score(users, streams).numpy()
    sc[:, 0] = -np.inf
    return sc


def evaluate_retrieval(train: pd.DataFrame, test: pd.DataFrame, *, models: Sequence[str] = MODELS,
                       live_only: bool = False, live_windows: Optional[pd.DataFrame] = None,
                       seed: int = 0, epochs: int = 8, chunk: int = 1024, graph_vectors: bool = True,
                       progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """The rows of the module docstring: one dict per (model, subset). ``graph_vectors``: the
    two-tower's stream tower gets the Metapath2vec vectors (trained on TRAIN) as an input."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    say = progress or (lambda msg: log.info(msg))
    t0 = time.perf_counter()
    world = World(train, test, live_windows=live_windows)
    say(f"world: {world.n_streams} streams, {len(world.train_sessions)} train sessions, {len(world.q)} queries "
        f"({int(world.is_new.sum())} new) in {time.perf_counter() - t0:.1f}s")
    need_tt = {"two_tower", "candidates"} & set(models)
    graph = None
    scorers: dict = {}
    if "metapath2vec" in models or (graph_vectors and (need_tt or "two_tower_multi" in models)):
        t1 = time.perf_counter()
        emb, graph = _metapath2vec(world, seed)
        say(f"metapath2vec trained in {time.perf_counter() - t1:.1f}s")
        if "metapath2vec" in models:
            def m2v(idx, emb=emb, graph=graph):
                zu = emb.lookup("user", world.q_user[idx])
                sc = zu @ graph.T
                sc[:, 0] = -np.inf
                return sc
            scorers["metapath2vec"] = m2v
    for name, k in (("two_tower", 1), ("two_tower_multi", 4)):
        if name in models or (name == "two_tower" and "candidates" in models):
            t1 = time.perf_counter()
            model, info = _two_tower(world, graph, interests=k, seed=seed, epochs=epochs,
                                     progress=lambda r, name=name: say(f"{name} {r}"))
            say(f"{name} trained in {time.perf_counter() - t1:.1f}s (best epoch {info['best_epoch']})")
            scorers[name] = (lambda idx, model=model: _model_scores(model, world, idx))

    def pop(idx):
        sc = np.tile(world.popularity, (len(idx), 1))
        sc[:, 0] = -np.inf
        return sc

    scorers["popularity"] = pop
    scorers["repeat"] = lambda idx: np.where(np.arange(world.n_streams + 1) == 0, -np.inf, world.repeat_scores(idx))
    ranks: dict = {m: ([], []) for m in models}
    for a in range(0, len(world.q), chunk):
        idx = np.arange(a, min(a + chunk, len(world.q)))
        allowed = world.live_mask(idx) if live_only else None
        tgt = world.q.target[idx] - 1
        computed = {}
        for m in models:
            if m in ("candidates", "repeat+popularity"):
                continue
            sc = scorers[m](idx)[:, 1:]
            computed[m] = sc
            ab, ti = rank_stats(sc, tgt, allowed)
            ranks[m][0].append(ab)
            ranks[m][1].append(ti)
        for merged in ("candidates", "repeat+popularity"):
            if merged not in models:
                continue
            from .candidates import merge
            rep = computed.get("repeat")
            rep = scorers["repeat"](idx)[:, 1:] if rep is None else rep
            tt = None
            if merged == "candidates":
                tt = computed.get("two_tower")
                tt = scorers["two_tower"](idx)[:, 1:] if tt is None else tt
            lists = []
            for i in range(len(idx)):
                ok = allowed[i] if allowed is not None else None
                lists.append(merge(repeat=_top(rep[i], REPEAT_MAX, ok, positive=True),
                                   ann=None if tt is None else _top(tt[i], BUDGET, ok),
                                   popular=_top(world.popularity[1:], BUDGET, ok), budget=BUDGET)[0])
            ab, ti = ranked_list_stats(lists, tgt)
            ranks[merged][0].append(ab)
            ranks[merged][1].append(ti)
    rows = []
    new = world.is_new
    for m in models:
        ab, ti = np.concatenate(ranks[m][0]), np.concatenate(ranks[m][1])
        for subset, mask in (("all", np.ones(len(ab), bool)), ("new", new)):
            rows.append({"model": m, "subset": subset, **from_ranks(ab[mask], ti[mask])})
    say(f"evaluated in {time.perf_counter() - t0:.1f}s")
    return rows


def _top(scores: np.ndarray, k: int, allowed: Optional[np.ndarray] = None, positive: bool = False) -> np.ndarray:
    """Columns of the ``k`` best scores (best first), only allowed ones, only > 0 with ``positive``."""
    sc = scores if allowed is None else np.where(allowed, scores, -np.inf)
    k = min(k, len(sc))
    idx = np.argpartition(-sc, k - 1)[:k]
    idx = idx[np.argsort(-sc[idx], kind="stable")]
    keep = np.isfinite(sc[idx]) & ((sc[idx] > 0) if positive else True)
    return idx[keep]


__all__ = ["MODELS", "read_twitch", "World", "evaluate_retrieval"]

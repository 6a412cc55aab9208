"""From a training/serving frame to the ranker's input tensors — one code path for both.

:class:`RankerInputs` is fit once on the TRAIN rows of a model version and saved with it; the
trained model and the API's scorer both call :meth:`RankerInputs.transform` on frames that hold

- ids: ``user_id``, ``stream_id``, ``category`` (the stream's category);
- :data:`feature_repo.features.FEATURE_COLUMNS` (point-in-time Feast statistics: training reads
  them with ``get_historical_features``, serving with ``get_online_features``);
- the Feast list columns ``recent_items``, ``recent_streams`` (user_recent) and ``rt_items``
  (stream_realtime: the stream's real-time products);
- ``position`` and ``page`` (training only: Biasnet's inputs).

and returns numpy arrays keyed like :class:`ranking.model.ranker.Ranker`'s batch:

=================  ==============  =====================================================
key                shape / dtype   content
=================  ==============  =====================================================
user_id            [N] int64       vocabulary index (1..V, 0 = unknown: a cold-start user)
stream_id          [N] int64       idem for streams
category           [N] int64       idem for categories
dense              [N, D] float32  sign·log1p(|x|), standardised with the train mean/std,
                                   clipped to ±5; missing → 0 (the train mean)
leaves             [N, T] int64    global GBDT leaf ids + 1 (0 = padding), when a GBDT is given
m2v_user           [N, d] float32  Metapath2vec vectors (snapshot of the version at fit time)
m2v_stream         [N, d] float32
core_items         [N, Lc] int64   the stream's core products (catalog ``stream_items.is_core``)
rt_items           [N, Lr] int64   the stream's real-time products (Feast ``rt_items``)
user_items         [N, Lu] int64   the user's recent items (Feast ``recent_items``)
user_streams       [N, Ls] int64   the user's recent streams (Feast ``recent_streams``)
user_streams_dt    [N, Ls] float32 seconds from each of them (its latest click/watch, Feast
                                   ``recent_stream_ts``) to the row's instant (``as_of`` epoch
                                   seconds at serving, ``ts`` in training); 0 where padded
user_streams_act   [N, Ls] int64   the deepest behaviour on each (Feast ``recent_stream_acts``:
                                   1 click, 2 watch, 3 item click, 4 purchase; 0 = padding)
user_streams_dwell [N, Ls] float32 its total watch seconds (``recent_stream_dwell``)
user_items_act     [N, Lu] int64   the deepest behaviour on each recent item (``recent_item_acts``)
position           [N] int64       slot position (1-based, 0 = unknown)
page               [N] int64       page index (0 = unknown)
=================  ==============  =====================================================

Lists are most recent first and truncated; 0 pads. Nothing here reads a clock or the event log:
what the frame says is all a row knows (the point-in-time guarantee is the frame's).
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

LIST_LENGTHS = {"core_items": 10, "rt_items": 10, "user_items": 20, "user_streams": 20}
LIST_SOURCES = {"rt_items": "rt_items", "user_items": "recent_items", "user_streams": "recent_streams"}
DENSE_CLIP = 5.0
INPUTS_FILE = "inputs.npz"
INPUTS_META = "inputs.json"


class Vocab:
    """Original int64 ids → contiguous indices 1..V (0 = unknown / padding)."""

    def __init__(self, ids):
        self.ids = np.unique(np.asarray(ids, dtype=np.int64))

    def __len__(self) -> int:                 # embedding rows, padding included
        return len(self.ids) + 1

    def index(self, original) -> np.ndarray:
        x = np.asarray(original, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(x.shape, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, x), len(self.ids) - 1)
        return np.where(self.ids[pos] == x, pos + 1, 0).astype(np.int64)


def _ids(series) -> np.ndarray:
    return pd.to_numeric(pd.Series(series), errors="coerce").fillna(-1).astype("int64").to_numpy()


def _pad_lists(lists: Sequence, length: int, vocab: Vocab) -> np.ndarray:
    """[N, length] vocabulary indices of python lists (None/NaN → empty), truncated, 0-padded."""
    n = len(lists)
    out = np.zeros((n, length), np.int64)
    if n == 0:
        return out
    if n > 1 and all(lst is lists[0] for lst in lists) and isinstance(lists[0], list):
        # one list object on every row (the request path: the user's lists, shared by the
        # candidates): pad it once
        out[:] = _pad_lists(lists[:1], length, vocab)[0]
        return out
    flat, rows, cols = [], [], []
    for i, lst in enumerate(lists):
        if lst is None or (isinstance(lst, float) and np.isnan(lst)):
            continue
        lst = list(lst)[:length]
        flat.extend(lst)
        rows.extend([i] * len(lst))
        cols.extend(range(len(lst)))
    if flat:
        out[np.asarray(rows), np.asarray(cols)] = vocab.index(np.asarray(flat, dtype=np.int64))
    return out


# behaviour lists aligned with an id list: (batch key, Feast column, the id list's key, dtype)
BEHAVIOUR_LISTS = (("user_streams_act", "recent_stream_acts", "user_streams", np.int64),
                   ("user_streams_dwell", "recent_stream_dwell", "user_streams", np.float32),
                   ("user_items_act", "recent_item_acts", "user_items", np.int64))


def _pad_values(lists: Sequence, length: int, dtype) -> np.ndarray:
    """[N, length] of python lists of numbers (None/NaN → empty), truncated, 0-padded (raw values,
    no vocabulary)."""
    n = len(lists)
    out = np.zeros((n, length), dtype)
    if n > 1 and all(lst is lists[0] for lst in lists) and isinstance(lists[0], list):
        v = np.asarray(lists[0][:length], dtype=dtype)            # the user's list, shared by the rows
        out[:, :len(v)] = v
        return out
    for i, lst in enumerate(lists):
        if lst is None or (isinstance(lst, float) and np.isnan(lst)) or len(lst) == 0:
            continue
        v = np.asarray(list(lst)[:length], dtype=dtype)
        out[i, :len(v)] = v
    return out


def _row_epoch_seconds(frame) -> Optional[np.ndarray]:
    """The rows' instant in epoch seconds: ``as_of`` (the request path), else ``event_timestamp``
    or ``ts`` (training frames); None when the frame has none."""
    if "as_of" in frame:
        return np.asarray(frame["as_of"], dtype=np.float64)
    for c in ("event_timestamp", "ts"):
        if c in frame:
            t = pd.to_datetime(pd.Series(np.asarray(frame[c])), utc=True).astype("datetime64[us, UTC]")
            return t.astype("int64").to_numpy() / 1e6
    return None


def time_gaps(ts_lists: Sequence, as_of: np.ndarray, length: int) -> np.ndarray:
    """[N, length] float32: as_of − ts for the first ``length`` times of each row's list (the same
    truncation as the id list), clipped at 0; 0 where the list is shorter."""
    n = len(ts_lists)
    out = np.zeros((n, length), np.float32)
    if n == 0:
        return out
    if n > 1 and all(lst is ts_lists[0] for lst in ts_lists) and isinstance(ts_lists[0], list):
        lst = np.asarray(ts_lists[0][:length], dtype=np.float64)           # the user's list, shared
        out[:, :len(lst)] = np.maximum(as_of[:, None] - lst[None, :], 0.0)
        return out
    for i, lst in enumerate(ts_lists):
        if lst is None or (isinstance(lst, float) and np.isnan(lst)) or len(lst) == 0:
            continue
        a = np.asarray(list(lst)[:length], dtype=np.float64)
        out[i, :len(a)] = np.maximum(as_of[i] - a, 0.0)
    return out


def dense_transform(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class RankerInputs:
    """The fitted input pipeline of one ranker version (see the module docstring)."""
    users: Vocab
    streams: Vocab
    items: Vocab
    categories: Vocab
    pages: list
    dense_cols: list
    mean: np.ndarray
    std: np.ndarray
    core_items: np.ndarray                      # [n_streams_vocab, Lc] item indices per stream index
    m2v_user: Optional[np.ndarray] = None        # [n_users_vocab, d] row 0 = default vector
    m2v_stream: Optional[np.ndarray] = None
    gbdt: Optional[object] = None                # ranking.gbdt.GBDTModel (leaf encoder)
    lengths: dict = field(default_factory=lambda: dict(LIST_LENGTHS))
    # graph.versions.GraphVersions in training (not saved): each row with a ``ts`` takes the
    # vectors of the newest version trained before it; the tables above are the newest version's
    # (serving: the API replaces them with the active version's, :meth:`with_embeddings`)
    graph_versions: Optional[object] = None
    item_vectors: Optional[np.ndarray] = None    # [n_items_vocab, dv] precomputed (ranking.item_vectors); row 0 zeros

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, train: pd.DataFrame, dense_cols: Sequence[str], *, catalog: Optional[dict] = None,
            embeddings=None, gbdt=None, extra_frames: Sequence[pd.DataFrame] = (),
            lengths: Optional[dict] = None, graph_versions=None, item_vectors=None) -> "RankerInputs":
        """Vocabularies and dense statistics from ``train`` (+ the catalog's streams/items: a
        stream that never appeared in training still gets its core products and category).

        ``extra_frames`` contribute ids only (e.g. the candidate streams of the test period must
        not be unknown just because they were not shown in train — their embeddings stay
        untrained, which is what serving would see); dense statistics come from ``train`` alone.
        ``graph_versions`` (graph.versions.GraphVersions): point-in-time Metapath2vec vectors
        instead of one table ``embeddings``. ``item_vectors``: ``(item_id [n], vector [n, d])``
        (ranking.item_vectors.read_item_vectors) — a table by item index.
        """
        if graph_versions is not None and len(graph_versions):
            embeddings = graph_versions.newest
        lengths = dict(LIST_LENGTHS, **(lengths or {}))
        catalog = catalog or {}
        frames = [train, *extra_frames]
        users = np.concatenate([_ids(f["user_id"]) for f in frames])
        stream_ids = [_ids(f["stream_id"]) for f in frames]
        cats = [_ids(f["category"]) for f in frames if "category" in f]
        items: list = []
        for f in frames:
            for col in ("recent_items", "rt_items"):
                if col in f:
                    items.extend(x for lst in f[col] if lst is not None and not isinstance(lst, float) for x in lst)
            if "recent_streams" in f:
                stream_ids.append(np.asarray([x for lst in f["recent_streams"]
                                              if lst is not None and not isinstance(lst, float) for x in lst],
                                             dtype=np.int64))
        st = catalog.get("streams")
        if st is not None and len(st):
            stream_ids.append(_ids(st["stream_id"]))
            cats.append(_ids(st["category"]))
        it = catalog.get("items")
        if it is not None and len(it):
            items.extend(_ids(it["item_id"]).tolist())
        si = catalog.get("stream_items")
        if si is not None and len(si):
            items.extend(_ids(si["item_id"]).tolist())
        users_v = Vocab(users[users >= 0])
        streams_all = np.concatenate(stream_ids)
        streams_v = Vocab(streams_all[streams_all >= 0])
        cats_all = np.concatenate(cats) if cats else np.zeros(0, np.int64)
        cats_v = Vocab(cats_all[cats_all >= 0])
        items_v = Vocab(np.asarray(items, dtype=np.int64))
        pages = sorted({str(p) for p in train["page"].dropna().unique()}) if "page" in train else []

        x = dense_transform(train[list(dense_cols)].to_numpy(dtype=np.float64, na_value=np.nan)) \
            if len(dense_cols) else np.zeros((len(train), 0))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)          # an all-missing column: mean 0, std 1
            mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(x.shape[1])
            std = np.nan_to_num(np.nanstd(x, axis=0)) if len(x) else np.ones(x.shape[1])
        std = np.where(std > 1e-9, std, 1.0)

        core = np.zeros((len(streams_v), lengths["core_items"]), np.int64)
        if si is not None and len(si):
            c = si[si["is_core"].astype(bool)] if "is_core" in si else si
            c = c.sort_values(["stream_id", "item_id"], kind="stable")
            for sid, grp in c.groupby("stream_id", sort=False):
                row = int(streams_v.index([int(sid)])[0])
                if row:
                    idx = items_v.index(grp["item_id"].to_numpy(dtype=np.int64)[:lengths["core_items"]])
                    core[row, :len(idx)] = idx

        m2v_user = m2v_stream = None
        if embeddings is not None and "user" in embeddings.tables and "stream" in embeddings.tables:
            m2v_user = np.vstack([embeddings.defaults["user"][None, :],
                                  embeddings.lookup("user", users_v.ids)]).astype(np.float32)
            m2v_stream = np.vstack([embeddings.defaults["stream"][None, :],
                                    embeddings.lookup("stream", streams_v.ids)]).astype(np.float32)
        obj = cls(users_v, streams_v, items_v, cats_v, pages, list(dense_cols), mean.astype(np.float64),
                  std.astype(np.float64), core, m2v_user, m2v_stream, gbdt, lengths)
        if graph_versions is not None and len(graph_versions) and m2v_user is not None:
            obj.graph_versions = graph_versions
        if item_vectors is not None:
            from .item_vectors import item_table
            obj.item_vectors = item_table(items_v.ids, *item_vectors)
        return obj

    def with_embeddings(self, embeddings) -> "RankerInputs":
        """A copy whose Metapath2vec tables are ``embeddings``' (graph.artifacts.Embeddings of the
        same dimension: the active graph version at serving); point-in-time versions dropped."""
        import copy
        if self.m2v_user is None:
            raise ValueError("this ranker was trained without Metapath2vec vectors")
        if embeddings.dim != self.m2v_user.shape[1]:
            raise ValueError(f"graph vectors of dimension {embeddings.dim}, the ranker takes {self.m2v_user.shape[1]}")
        out = copy.copy(self)
        out.m2v_user = np.vstack([embeddings.defaults["user"][None, :],
                                  embeddings.lookup("user", self.users.ids)]).astype(np.float32)
        out.m2v_stream = np.vstack([embeddings.defaults["stream"][None, :],
                                    embeddings.lookup("stream", self.streams.ids)]).astype(np.float32)
        out.graph_versions = None
        return out

    # ------------------------------------------------------------------ sizes for RankerConfig
    def config_sizes(self) -> dict:
        out = {"n_users": len(self.users), "n_streams": len(self.streams), "n_items": len(self.items),
               "n_categories": len(self.categories), "n_dense": len(self.dense_cols),
               "n_pages": len(self.pages) + 1,
               "m2v_dim": 0 if self.m2v_user is None else int(self.m2v_user.shape[1]),
               "item_vector_dim": 0 if self.item_vectors is None else int(self.item_vectors.shape[1])}
        if self.gbdt is not None:
            out["n_trees"] = int(self.gbdt.num_trees)
            out["n_leaf_tokens"] = int(self.gbdt.num_trees * self.gbdt.num_leaves) + 1
        return out

    # ------------------------------------------------------------------ transform
    def transform(self, frame: pd.DataFrame, *, with_position: bool = True, num_threads: Optional[int] = None
                  ) -> dict:
        """The batch of ``frame`` (module docstring); ``num_threads``: LightGBM's, for the leaves."""
        n = len(frame)
        u = self.users.index(_ids(frame["user_id"]))
        s = self.streams.index(_ids(frame["stream_id"]))
        cat_col = "category" if "category" in frame else ("category_id" if "category_id" in frame else None)
        out = {"user_id": u, "stream_id": s,
               "category": self.categories.index(_ids(frame[cat_col])) if cat_col else np.zeros(n, np.int64)}
        if self.dense_cols:
            x = dense_transform(frame[self.dense_cols].to_numpy(dtype=np.float64, na_value=np.nan))
            x = (x - self.mean) / self.std
            out["dense"] = np.clip(np.nan_to_num(x, nan=0.0), -DENSE_CLIP, DENSE_CLIP).astype(np.float32)
        else:
            out["dense"] = np.zeros((n, 0), np.float32)
        if self.gbdt is not None:
            from .gbdt import LeafEncoder
            out["leaves"] = LeafEncoder(self.gbdt).transform(frame, num_threads=num_threads) + 1
        if self.m2v_user is not None and self.graph_versions is not None and "ts" in frame:
            out["m2v_user"], _ = self.graph_versions.lookup_at("user", _ids(frame["user_id"]), frame["ts"])
            out["m2v_stream"], _ = self.graph_versions.lookup_at("stream", _ids(frame["stream_id"]), frame["ts"])
        elif self.m2v_user is not None:
            out["m2v_user"] = self.m2v_user[u]
            out["m2v_stream"] = self.m2v_stream[s]
        out["core_items"] = self.core_items[s]
        for key, col in LIST_SOURCES.items():
            vocab = self.streams if key == "user_streams" else self.items
            lists = frame[col].tolist() if col in frame else [None] * n
            out[key] = _pad_lists(lists, self.lengths[key], vocab)
        if "recent_stream_ts" in frame:
            as_of = _row_epoch_seconds(frame)
            if as_of is not None:
                out["user_streams_dt"] = time_gaps(frame["recent_stream_ts"].tolist(), as_of, self.lengths["user_streams"])
        for key, col, ids_key, dtype in BEHAVIOUR_LISTS:
            if col in frame:
                out[key] = _pad_values(frame[col].tolist(), self.lengths[ids_key], dtype) * (out[ids_key] > 0)
        if with_position:
            pos = pd.to_numeric(frame["position"], errors="coerce").fillna(0).astype("int64").to_numpy() \
                if "position" in frame else np.zeros(n, np.int64)
            out["position"] = np.maximum(pos, 0)
            if "page" in frame and self.pages:
                lut = {p: i + 1 for i, p in enumerate(self.pages)}
                out["page"] = np.asarray([lut.get(str(p), 0) for p in frame["page"]], dtype=np.int64)
            else:
                out["page"] = np.zeros(n, np.int64)
        return out

    def page_index(self, page: str) -> int:
        return self.pages.index(page) + 1 if page in self.pages else 0

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"users": self.users.ids, "streams": self.streams.ids, "items": self.items.ids,
                  "categories": self.categories.ids, "mean": self.mean, "std": self.std,
                  "core_items": self.core_items}
        if self.m2v_user is not None:
            arrays.update(m2v_user=self.m2v_user, m2v_stream=self.m2v_stream)
        if self.item_vectors is not None:
            arrays.update(item_vectors=self.item_vectors)
        np.savez(d / INPUTS_FILE, **arrays)
        meta = {"pages": self.pages, "dense_cols": self.dense_cols, "lengths": self.lengths,
                "gbdt": self.gbdt is not None}
        (d / INPUTS_META).write_text(json.dumps(meta, indent=1))
        if self.gbdt is not None:
            self.gbdt.save(d / "gbdt")
        return d

    @classmethod
    def load(cls, directory) -> "RankerInputs":
        d = Path(directory)
        meta = json.loads((d / INPUTS_META).read_text())
        z = np.load(d / INPUTS_FILE)
        gbdt = None
        if meta.get("gbdt"):
            from .gbdt import GBDTModel
            gbdt = GBDTModel.load(d / "gbdt")
        obj = cls(Vocab([]), Vocab([]), Vocab([]), Vocab([]), list(meta["pages"]), list(meta["dense_cols"]),
                  z["mean"], z["std"], z["core_items"], z["m2v_user"] if "m2v_user" in z else None,
                  z["m2v_stream"] if "m2v_stream" in z else None, gbdt, dict(meta["lengths"]))
        obj.users.ids, obj.streams.ids, obj.items.ids, obj.categories.ids = (
            z["users"], z["streams"], z["items"], z["categories"])
        obj.item_vectors = z["item_vectors"] if "item_vectors" in z else None
        return obj


def labels(frame: pd.DataFrame) -> dict:
    """Training targets: click, purchase (all impressions, ESMM), stay (log1p seconds)."""
    n = len(frame)
    get = (lambda c: frame[c].to_numpy(dtype=np.float64) if c in frame else np.zeros(n))
    return {"click": (get("click") > 0).astype(np.float32),
            "purchase": (get("purchase") > 0).astype(np.float32),
            "stay": np.log1p(np.maximum(np.nan_to_num(get("stay_s")), 0.0)).astype(np.float32)}


__all__ = ["RankerInputs", "Vocab", "labels", "LIST_LENGTHS", "dense_transform"]

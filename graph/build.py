r"""The heterogeneous information network of live-stream e-commerce, as a PyG
:class:`~torch_geometric.data.HeteroData` (seed article 004, V3).

Node types and edge types (every relation also has its reverse ``rev_<relation>``):

==========  ===================================  ==========================================
node type   contiguous ids ``0 .. n-1``          from
==========  ===================================  ==========================================
user        every catalog user and every user     ``users``, events
            seen in the window
stream      every catalog stream, including new   ``streams``, ``stream_items``, events
            ones with no event yet
item        every catalog item                    ``items``, ``stream_items``, events
category    every stream or item category         ``streams.category``, ``items.category``
==========  ===================================  ==========================================

==================================  =======================================================
edge type                           from
==================================  =======================================================
``(user, watches, stream)``         ``watch`` and ``click`` events in the window
``(user, clicks, item)``            ``item_click`` events in the window
``(user, buys, item)``              ``purchase`` events in the window
``(stream, sells, item)``           ``stream_items`` (catalog)
``(stream, in, category)``          ``streams.category`` (catalog)
``(item, in, category)``            ``items.category`` (catalog)
``(user, likes, category)``         optional (``user_category=True``): the categories of the
                                    streams a user watched in the window
==================================  =======================================================

Event edges are de-duplicated (one edge per (user, stream) pair); the number of events behind
each edge is kept as ``data[edge_type].count`` (``[num_edges]``, int64) on the forward event
relations. Every edge type of the schema (``likes`` only with ``user_category=True``) is present,
possibly with ``edge_index`` of shape ``[2, 0]``, so a metapath that names it never fails on a
missing key.

Ids: ``GraphData.id_maps[node_type]`` is the int64 array of ORIGINAL ids, indexed by the
contiguous id (sorted ascending), so ``id_maps[t][contiguous] == original`` and
:func:`to_contiguous` goes back (unknown ids → ``-1``). :func:`save_id_maps` /
:func:`load_id_maps` store them as one ``.npz`` (exact int64 round trip).

Loaders for the real files: :func:`from_twitch` (user, stream = streamer, category = community)
and :func:`from_taobao` (user, item, category; ``pv``/``cart``/``fav`` → clicks, ``buy`` → buys;
there are no streams, so use the item metapaths of :func:`default_metapaths`).

This module imports torch and torch_geometric at import time: only workers import it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

log = logging.getLogger(__name__)

NODE_TYPES = ("user", "stream", "item", "category")
WATCHES = ("user", "watches", "stream")
CLICKS = ("user", "clicks", "item")
BUYS = ("user", "buys", "item")
SELLS = ("stream", "sells", "item")
STREAM_IN = ("stream", "in", "category")
ITEM_IN = ("item", "in", "category")
USER_LIKES = ("user", "likes", "category")
FORWARD_EDGE_TYPES = (WATCHES, CLICKS, BUYS, SELLS, STREAM_IN, ITEM_IN, USER_LIKES)
WATCH_EVENT_TYPES = ("watch", "click")
EVENT_EDGE = {"watch": WATCHES, "click": WATCHES, "item_click": CLICKS, "purchase": BUYS}
ID_MAPS_FILE = "id_maps.npz"


def rev(edge_type: tuple) -> tuple:
    """The reverse of an edge type: ``(src, rel, dst)`` → ``(dst, rev_rel, src)``."""
    src, rel, dst = edge_type
    return (dst, rel[4:] if rel.startswith("rev_") else f"rev_{rel}", src)


ALL_EDGE_TYPES = tuple(et for f in FORWARD_EDGE_TYPES for et in (f, rev(f)))


@dataclass
class GraphData:
    r"""A built graph and what is needed to map it back to the catalog.

    Attributes:
        data (HeteroData): ``data[t].num_nodes`` per node type and ``data[et].edge_index``
            (``[2, num_edges]``, int64, contiguous ids) per edge type of :data:`ALL_EDGE_TYPES`.
        id_maps (dict[str, np.ndarray]): original ids per node type, ``[num_nodes]`` int64,
            sorted; position = contiguous id.
        counts (dict): ``{"nodes": {type: n}, "edges": {"src__rel__dst": m}}``.
        node_category (dict[str, np.ndarray]): contiguous category id of each stream / item
            (``[num_nodes]`` int64, ``-1`` when unknown) — used for the embedding fallback of
            nodes that no walk reached.
        window (tuple): the ``(start, end)`` the events were restricted to.
    """
    data: HeteroData
    id_maps: dict
    counts: dict
    node_category: dict = field(default_factory=dict)
    window: tuple = (None, None)

    @property
    def num_nodes(self) -> dict:
        return {t: int(len(ids)) for t, ids in self.id_maps.items()}

    def edge_index(self, edge_type: tuple) -> torch.Tensor:
        """``[2, num_edges]`` contiguous ids of one edge type (empty when the graph has none)."""
        if edge_type in self.data.edge_types:
            return self.data[edge_type].edge_index
        return torch.empty(2, 0, dtype=torch.long)

    def degree(self, node_type: str, edge_type: tuple, *, with_counts: bool = False) -> np.ndarray:
        """Degree of every ``node_type`` node in ``edge_type`` (as source, else as destination).

        ``with_counts=True`` sums the event multiplicities (``count``) instead of edges."""
        ei = self.edge_index(edge_type).numpy()
        side = 0 if edge_type[0] == node_type else 1
        w = None
        if with_counts and edge_type in self.data.edge_types and "count" in self.data[edge_type]:
            w = self.data[edge_type].count.numpy().astype(np.float64)
        return np.bincount(ei[side], weights=w, minlength=self.num_nodes[node_type]).astype(np.float64)

    def to_contiguous(self, node_type: str, original_ids) -> np.ndarray:
        return to_contiguous(self.id_maps[node_type], original_ids)


# ----------------------------------------------------------------------------- id maps
def to_contiguous(id_map: np.ndarray, original_ids) -> np.ndarray:
    """Contiguous ids of ``original_ids`` in a sorted ``id_map``; unknown ids → ``-1``."""
    ids = np.asarray(original_ids, dtype=np.int64).reshape(-1)
    if len(id_map) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.searchsorted(id_map, ids)
    pos_c = np.minimum(pos, len(id_map) - 1)
    return np.where(id_map[pos_c] == ids, pos_c, -1).astype(np.int64)


def save_id_maps(id_maps: Mapping[str, np.ndarray], path: Union[str, Path]) -> Path:
    """Write the id maps as one ``.npz`` (a folder gets ``id_maps.npz`` inside it)."""
    path = Path(path)
    if path.suffix != ".npz":
        path.mkdir(parents=True, exist_ok=True)
        path = path / ID_MAPS_FILE
    np.savez(path, **{t: np.asarray(v, dtype=np.int64) for t, v in id_maps.items()})
    return path


def load_id_maps(path: Union[str, Path]) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / ID_MAPS_FILE
    with np.load(path, allow_pickle=False) as z:
        return {t: z[t].astype(np.int64) for t in z.files}


# ----------------------------------------------------------------------------- helpers
def _ids(*cols) -> np.ndarray:
    parts = [pd.to_numeric(pd.Series(c), errors="coerce").dropna().to_numpy(dtype=np.int64)
             for c in cols if c is not None and len(c)]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(parts))


def _frame(catalog, name: str) -> Optional[pd.DataFrame]:
    if catalog is None:
        return None
    if hasattr(catalog, "catalog"):                    # a store.sources.SourceData
        catalog = catalog.catalog()
    df = catalog.get(name) if isinstance(catalog, Mapping) else None
    return df if df is not None and len(df) else None


def _col(df: Optional[pd.DataFrame], name: str):
    return None if df is None or name not in df.columns else df[name]


def _as_ts(t) -> Optional[pd.Timestamp]:
    if t is None:
        return None
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _edges(src_ids: np.ndarray, dst_ids: np.ndarray, src_map: np.ndarray, dst_map: np.ndarray,
           dedupe: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Original-id pairs → unique contiguous pairs (sorted) + the multiplicity of each."""
    s = to_contiguous(src_map, src_ids)
    d = to_contiguous(dst_map, dst_ids)
    ok = (s >= 0) & (d >= 0)
    s, d = s[ok], d[ok]
    if not len(s):
        return np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
    key = s * max(len(dst_map), 1) + d
    if not dedupe:
        order = np.argsort(key, kind="stable")
        return np.stack([s[order], d[order]]), np.ones(len(s), dtype=np.int64)
    uk, cnt = np.unique(key, return_counts=True)
    n_dst = max(len(dst_map), 1)
    return np.stack([uk // n_dst, uk % n_dst]).astype(np.int64), cnt.astype(np.int64)


# ----------------------------------------------------------------------------- build
def build_graph(events: Optional[pd.DataFrame], catalog=None, *, start=None, end=None,
                user_category: bool = False, dedupe: bool = True) -> GraphData:
    r"""Build the user–stream–item–category graph of the events in ``[start, end)``.

    Args:
        events (pd.DataFrame): the event log (``store.ingest.load_events``): columns ``user_id``,
            ``ts``, ``type``, ``stream_id``, ``item_id`` (others are ignored). ``None`` or empty:
            a graph of the catalog alone.
        catalog (dict or SourceData, optional): ``users``, ``items``, ``streams``,
            ``stream_items`` frames (``store.ingest.load_catalog``). Every catalog node gets a
            contiguous id even without edges (a stream that just started).
        start, end (datetime, optional): the time window of the events (``start <= ts < end``).
            The catalog relations (sells, in) are not time-filtered.
        user_category (bool): add ``(user, likes, category)`` edges (categories of the streams
            each user watched) and their reverse.
        dedupe (bool): one edge per (src, dst) pair (default) or one per event.
    """
    t0 = time.perf_counter()
    ev = events if events is not None else pd.DataFrame(columns=["user_id", "ts", "type", "stream_id", "item_id"])
    t_start, t_end = _as_ts(start), _as_ts(end)
    if len(ev) and (t_start is not None or t_end is not None):
        ts = pd.to_datetime(ev["ts"], utc=True)
        keep = np.ones(len(ev), dtype=bool)
        if t_start is not None:
            keep &= (ts >= t_start).to_numpy()
        if t_end is not None:
            keep &= (ts < t_end).to_numpy()
        ev = ev[keep]
    typ = ev["type"].astype(str).to_numpy() if len(ev) else np.zeros(0, dtype=object)
    users_df, items_df = _frame(catalog, "users"), _frame(catalog, "items")
    streams_df, si_df = _frame(catalog, "streams"), _frame(catalog, "stream_items")

    is_watch = np.isin(typ, WATCH_EVENT_TYPES)
    is_click = typ == "item_click"
    is_buy = typ == "purchase"
    ev_stream = ev["stream_id"] if len(ev) else None
    ev_item = ev["item_id"] if len(ev) else None

    # ------------------------------------------------------------------ nodes
    id_maps = {
        "user": _ids(_col(users_df, "user_id"), ev["user_id"] if len(ev) else None),
        "stream": _ids(_col(streams_df, "stream_id"), _col(si_df, "stream_id"),
                       ev_stream[is_watch] if ev_stream is not None else None),
        "item": _ids(_col(items_df, "item_id"), _col(si_df, "item_id"),
                     ev_item[is_click | is_buy] if ev_item is not None else None),
        "category": _ids(_col(streams_df, "category"), _col(items_df, "category")),
    }

    # ------------------------------------------------------------------ edges
    def pairs(mask, a, b):
        sub = ev[mask][[a, b]].dropna()
        return sub[a].to_numpy(dtype=np.int64), sub[b].to_numpy(dtype=np.int64)

    edges: dict = {}
    if len(ev):
        for et, mask, col in ((WATCHES, is_watch, "stream_id"), (CLICKS, is_click, "item_id"),
                              (BUYS, is_buy, "item_id")):
            u, x = pairs(mask, "user_id", col)
            edges[et] = _edges(u, x, id_maps["user"], id_maps[et[2]], dedupe)
    if si_df is not None:
        edges[SELLS] = _edges(si_df["stream_id"].to_numpy(np.int64), si_df["item_id"].to_numpy(np.int64),
                              id_maps["stream"], id_maps["item"])
    node_category = {}
    for et, df, key in ((STREAM_IN, streams_df, "stream_id"), (ITEM_IN, items_df, "item_id")):
        t = et[0]
        cat = np.full(len(id_maps[t]), -1, dtype=np.int64)
        if df is not None and "category" in df.columns:
            sub = df[[key, "category"]].dropna()
            s = to_contiguous(id_maps[t], sub[key].to_numpy(np.int64))
            c = to_contiguous(id_maps["category"], sub["category"].to_numpy(np.int64))
            ok = (s >= 0) & (c >= 0)
            cat[s[ok]] = c[ok]
            edges[et] = _edges(id_maps[t][s[ok]], id_maps["category"][c[ok]], id_maps[t], id_maps["category"])
        node_category[t] = cat
    if user_category and WATCHES in edges and edges[WATCHES][0].shape[1]:
        u, s = edges[WATCHES][0]
        c = node_category["stream"][s]
        ok = c >= 0
        edges[USER_LIKES] = _edges(id_maps["user"][u[ok]], id_maps["category"][c[ok]], id_maps["user"],
                                   id_maps["category"])

    # ------------------------------------------------------------------ HeteroData
    data = HeteroData()
    for t in NODE_TYPES:
        data[t].num_nodes = int(len(id_maps[t]))
    for et in FORWARD_EDGE_TYPES:
        if et == USER_LIKES and not user_category:
            continue
        ei, cnt = edges.get(et, (np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)))
        data[et].edge_index = torch.from_numpy(np.ascontiguousarray(ei))
        if et in EVENT_EDGE.values():
            data[et].count = torch.from_numpy(cnt)
        data[rev(et)].edge_index = torch.from_numpy(np.ascontiguousarray(ei[::-1]))

    counts = {"nodes": {t: int(len(id_maps[t])) for t in NODE_TYPES},
              "edges": {"__".join(et): int(data[et].edge_index.shape[1]) for et in data.edge_types
                        if not et[1].startswith("rev_")},
              "events": int(len(ev))}
    counts["num_edges"] = int(sum(counts["edges"].values()))
    log.info("build_graph: nodes %s; edges %s (+ reverses); %d events in the window; %.2fs",
             counts["nodes"], counts["edges"], len(ev), time.perf_counter() - t0)
    return GraphData(data=data, id_maps=id_maps, counts=counts, node_category=node_category,
                     window=(t_start, t_end))


# ----------------------------------------------------------------------------- metapaths
def metapath(*node_and_relations: str) -> list:
    r"""A metapath from an alternating list ``node, relation, node, relation, ..., node``.

    ``metapath("user", "watches", "stream", "rev_watches", "user")`` →
    ``[("user", "watches", "stream"), ("stream", "rev_watches", "user")]``.
    """
    x = node_and_relations
    if len(x) < 3 or len(x) % 2 == 0:
        raise ValueError("metapath: give node, relation, node[, relation, node ...]")
    return [(x[i], x[i + 1], x[i + 2]) for i in range(0, len(x) - 2, 2)]


# The metapaths of the seed article plus their item-only counterparts (for data without streams).
METAPATHS = {
    "USU": metapath("user", "watches", "stream", "rev_watches", "user"),
    "USISU": metapath("user", "watches", "stream", "sells", "item", "rev_sells", "stream", "rev_watches", "user"),
    "USCSU": metapath("user", "watches", "stream", "in", "category", "rev_in", "stream", "rev_watches", "user"),
    "SIS": metapath("stream", "sells", "item", "rev_sells", "stream"),
    "SCS": metapath("stream", "in", "category", "rev_in", "stream"),
    "UIU": metapath("user", "clicks", "item", "rev_clicks", "user"),
    "UBU": metapath("user", "buys", "item", "rev_buys", "user"),
    "UICIU": metapath("user", "clicks", "item", "in", "category", "rev_in", "item", "rev_clicks", "user"),
    "ICI": metapath("item", "in", "category", "rev_in", "item"),
}


def default_metapaths(graph: GraphData, names: Sequence[str] = tuple(METAPATHS)) -> list:
    """The metapaths of :data:`METAPATHS` whose every edge type has at least one edge.

    The simulator world gets all of them; Twitch (no items) gets USU, USCSU, SCS; the Taobao
    sample (no streams) gets UIU, UBU, UICIU, ICI."""
    out = []
    for name in names:
        mp = METAPATHS[name]
        if all(graph.edge_index(et).shape[1] > 0 for et in mp):
            out.append(list(mp))
    return out


# ----------------------------------------------------------------------------- real files
def from_twitch(path, *, start=None, end=None, **kwargs) -> GraphData:
    """The Twitch watches file (or a frame with ``user_id, streamer_id, slot, community``):
    users, streams (= streamers, category = their most frequent community), watch edges.

    Time: slot ``t`` is ``store.sources.twitch.BASE_TIME + t·10 min`` (``start`` / ``end``
    filter on it)."""
    from store.sources.twitch import load_twitch
    src = load_twitch(path)
    return build_graph(src.events, src.catalog(), start=start, end=end, **kwargs)


TAOBAO_COLUMNS = ["user_id", "item_id", "category", "behavior", "ts"]
TAOBAO_BEHAVIOR = {"pv": "item_click", "cart": "item_click", "fav": "item_click", "buy": "purchase"}


def read_taobao(path) -> tuple[pd.DataFrame, dict]:
    """``UserBehavior.csv`` (no header: user, item, category, behavior, unix ts) → (events, catalog)."""
    df = path.copy() if isinstance(path, pd.DataFrame) else pd.read_csv(path, header=None, names=TAOBAO_COLUMNS)
    df = df.dropna(subset=["user_id", "item_id", "behavior"])
    typ = df["behavior"].astype(str).str.lower().map(TAOBAO_BEHAVIOR)
    df = df[typ.notna()].assign(type=typ[typ.notna()])
    events = pd.DataFrame({
        "user_id": df["user_id"].astype("int64").to_numpy(),
        "ts": pd.to_datetime(df["ts"].astype("int64"), unit="s", utc=True).to_numpy(),
        "type": df["type"].to_numpy(),
        "stream_id": pd.array([pd.NA] * len(df), dtype="Int64"),
        "item_id": pd.array(df["item_id"].astype("int64").to_numpy(), dtype="Int64"),
    })
    events["ts"] = pd.to_datetime(events["ts"], utc=True)
    items = (df[["item_id", "category"]].dropna().astype("int64").drop_duplicates("item_id")
             .reset_index(drop=True))
    users = pd.DataFrame({"user_id": np.unique(events["user_id"].to_numpy())})
    return events.sort_values("ts", kind="stable").reset_index(drop=True), {"users": users, "items": items}


def from_taobao(path, *, start=None, end=None, **kwargs) -> GraphData:
    """The Taobao UserBehavior sample: user–clicks/buys–item and item–in–category (no streams)."""
    events, catalog = read_taobao(path)
    return build_graph(events, catalog, start=start, end=end, **kwargs)


__all__ = ["GraphData", "build_graph", "from_twitch", "from_taobao", "read_taobao", "save_id_maps",
           "load_id_maps", "to_contiguous", "metapath", "METAPATHS", "default_metapaths", "rev",
           "NODE_TYPES", "ALL_EDGE_TYPES", "WATCHES", "CLICKS", "BUYS", "SELLS", "STREAM_IN", "ITEM_IN",
           "USER_LIKES"]

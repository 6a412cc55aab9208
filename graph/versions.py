"""The graph job's embedding versions through time: point-in-time Metapath2vec vectors.

Each version the graph job registers says, in its registry metrics, ``trained_until``: the time of
the newest event it was trained on. A training row at time ``t`` may only see a version with
``trained_until < t`` — every event of the row's own outcome (the click, the watch, the purchase)
happens at or after ``t``, so such a version cannot encode the row's label (a user–stream edge
that exists BECAUSE of the label). :class:`GraphVersions` gives each row the newest such version,
as Feast gives each row the newest feature value before it; serving uses the active version,
which is that same rule at "now".

numpy only (what the ranker's job and the API import).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .artifacts import MODEL_NAME, Embeddings

log = logging.getLogger(__name__)

MAX_VERSIONS = 30        # the newest versions kept in memory (a month of the daily job)


def _ns(ts) -> np.ndarray:
    """UTC epoch nanoseconds of timestamps (a column, a list or one value) as int64."""
    import pandas as pd
    if not isinstance(ts, pd.Series):
        ts = pd.Series(np.atleast_1d(np.asarray(ts, dtype=object)))
    t = pd.to_datetime(ts, utc=True).dt.tz_localize(None)
    return t.to_numpy().astype("datetime64[ns]").astype(np.int64)


@dataclass
class GraphVersions:
    """Embedding versions sorted by ``trained_until`` (ascending).

    Attributes:
        until (np.ndarray): ``[V]`` int64 epoch ns, the newest event each version was trained on.
        versions (list[str]): ``[V]`` registry versions.
        embeddings (list[Embeddings]): ``[V]`` tables (one dimension for all).
    """
    until: np.ndarray
    versions: list
    embeddings: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.until = np.asarray(self.until, dtype=np.int64)
        order = np.argsort(self.until, kind="stable")
        self.until = self.until[order]
        self.versions = [self.versions[i] for i in order]
        self.embeddings = [self.embeddings[i] for i in order]
        dims = {e.dim for e in self.embeddings}
        if len(dims) > 1:
            raise ValueError(f"graph versions of different dimensions: {sorted(dims)}")

    def __len__(self) -> int:
        return len(self.versions)

    @property
    def dim(self) -> int:
        return self.embeddings[0].dim if self.embeddings else 0

    @property
    def newest(self) -> Optional[Embeddings]:
        return self.embeddings[-1] if self.embeddings else None

    def index_at(self, ts) -> np.ndarray:
        """``[N]`` int64: per time, the newest version with ``trained_until`` strictly before it
        (``-1``: none is)."""
        return np.searchsorted(self.until, _ns(ts), side="left").astype(np.int64) - 1

    def lookup_at(self, node_type: str, ids, ts) -> tuple[np.ndarray, np.ndarray]:
        """(``[N, dim]`` float32 vectors of ``ids`` each from the version :meth:`index_at` its
        time picks — zeros where none precedes it —, ``[N]`` the version index)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        idx = self.index_at(ts)
        out = np.zeros((len(ids), self.dim), np.float32)
        for v in np.unique(idx[idx >= 0]):
            rows = np.flatnonzero(idx == v)
            out[rows] = self.embeddings[int(v)].lookup(node_type, ids[rows])
        return out, idx

    def counts(self, ts) -> dict:
        """{version: rows at ``ts`` that take it} (``"none"``: rows no version precedes)."""
        idx = self.index_at(ts)
        vals, n = np.unique(idx, return_counts=True)
        return {("none" if v < 0 else self.versions[int(v)]): int(c) for v, c in zip(vals, n)}


def load_versions(database_url: str, *, dim: Optional[int] = None, before=None,
                  max_versions: int = MAX_VERSIONS) -> GraphVersions:
    """The registered Metapath2vec versions a ranker may train on: those whose gate passed (served
    once, or back-filled for the ranker: ``graph.job`` ``promote=False``) with a
    ``trained_until``, an artifact on disk and the dimension ``dim`` (default: the newest's); only
    those trained before ``before`` when given; the newest ``max_versions``."""
    from store.registry import list_models
    rows = []
    for r in list_models(database_url, MODEL_NAME):
        m = r.get("metrics") or {}
        if not (m.get("gate") or {}).get("passed") or not m.get("trained_until") or r["status"] == "rejected":
            continue
        if not Path(r["artifact_path"]).exists():
            continue
        rows.append((int(_ns(m["trained_until"])[0]), r))
    if before is not None:
        cut = int(_ns(before)[0])
        rows = [x for x in rows if x[0] < cut]
    rows.sort(key=lambda x: x[0])
    kept_until, kept_versions, kept_emb = [], [], []
    for until, r in reversed(rows):
        if len(kept_versions) >= max_versions:
            break
        try:
            emb = Embeddings.load(r["artifact_path"])
        except Exception as exc:            # an unreadable version: the others still serve
            log.warning("graph version %s unreadable: %s", r["version"], exc)
            continue
        if dim is None:
            dim = emb.dim
        if emb.dim != dim:
            continue
        emb.meta.setdefault("version", r["version"])
        kept_until.append(until)
        kept_versions.append(r["version"])
        kept_emb.append(emb)
    return GraphVersions(np.asarray(kept_until, np.int64), kept_versions, kept_emb)


__all__ = ["GraphVersions", "load_versions", "MAX_VERSIONS"]

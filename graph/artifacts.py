"""Embedding tables as versioned artifacts (numpy only: the API and the ranker import this).

:class:`Embeddings` holds one float32 table per node type, the original ids of its rows and a
default vector per type (for ids the table does not know). On disk (``save`` / ``load``)::

    <dir>/embeddings.npz   table__<node_type> [n, dim] float32, default__<node_type> [dim]
    <dir>/id_maps.npz      <node_type> [n] int64 original ids (row i ↔ id_maps[t][i])
    <dir>/meta.json        config, counts, training figures, data version

The job that trains them (a Celery worker's) is :func:`graph.job.train_and_register_embeddings`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "metapath2vec"
TABLES_FILE = "embeddings.npz"
ID_MAPS_FILE = "id_maps.npz"           # == graph.build.ID_MAPS_FILE (kept import-free)
META_FILE = "meta.json"


@dataclass
class Embeddings:
    r"""One embedding table per node type, addressed by ORIGINAL ids.

    Attributes:
        tables (dict[str, np.ndarray]): ``[num_nodes, dim]`` float32 per node type.
        id_maps (dict[str, np.ndarray]): ``[num_nodes]`` int64 original ids per node type, sorted
            ascending; row ``i`` of ``tables[t]`` is the node ``id_maps[t][i]``.
        defaults (dict[str, np.ndarray]): ``[dim]`` float32 per node type, the vector of an id the
            table does not know (the mean of the type's trained rows).
        meta (dict): JSON-able facts (config, counts, figures, which rows were trained).
    """
    tables: dict
    id_maps: dict
    defaults: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t, tab in self.tables.items():
            tab = np.ascontiguousarray(tab, dtype=np.float32)
            self.tables[t] = tab
            ids = np.asarray(self.id_maps[t], dtype=np.int64)
            if len(ids) != len(tab):
                raise ValueError(f"{t}: {len(ids)} ids for {len(tab)} rows")
            if len(ids) > 1 and np.any(ids[1:] <= ids[:-1]):
                raise ValueError(f"{t}: id map must be sorted and unique")
            self.id_maps[t] = ids
            d = self.defaults.get(t)
            self.defaults[t] = (np.zeros(tab.shape[1], np.float32) if d is None
                                else np.asarray(d, dtype=np.float32).reshape(tab.shape[1]))

    @property
    def dim(self) -> int:
        return int(next(iter(self.tables.values())).shape[1]) if self.tables else 0

    @property
    def node_types(self) -> list:
        return list(self.tables)

    def index_of(self, node_type: str, original_ids) -> np.ndarray:
        """Rows of ``original_ids`` (``-1`` for ids the table does not know)."""
        id_map = self.id_maps[node_type]
        ids = np.asarray(original_ids, dtype=np.int64).reshape(-1)
        if len(id_map) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(id_map, ids), len(id_map) - 1)
        return np.where(id_map[pos] == ids, pos, -1).astype(np.int64)

    def lookup(self, node_type: str, original_ids) -> np.ndarray:
        """``[len(original_ids), dim]`` float32; unknown ids get the type's default vector."""
        if node_type not in self.tables:
            raise KeyError(f"no {node_type!r} table (have {', '.join(self.tables)})")
        idx = self.index_of(node_type, original_ids)
        out = self.tables[node_type][np.maximum(idx, 0)] if len(self.tables[node_type]) else \
            np.zeros((len(idx), self.dim), np.float32)
        out = np.array(out, dtype=np.float32, copy=True)
        out[idx < 0] = self.defaults[node_type]
        return out

    def score(self, user_ids, stream_ids, *, src: str = "user", dst: str = "stream") -> np.ndarray:
        """Dot products ``<e_src(u_i), e_dst(s_i)>`` row by row (the link-prediction score)."""
        return np.einsum("nd,nd->n", self.lookup(src, user_ids), self.lookup(dst, stream_ids))

    # ------------------------------------------------------------------ files
    def save(self, directory: Union[str, Path]) -> Path:
        """Write the three files into ``directory`` (atomically: a temp folder renamed into place)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            arrays = {f"table__{t}": v for t, v in self.tables.items()}
            arrays.update({f"default__{t}": v for t, v in self.defaults.items()})
            np.savez(tmp / TABLES_FILE, **arrays)
            np.savez(tmp / ID_MAPS_FILE, **self.id_maps)
            (tmp / META_FILE).write_text(json.dumps(self.meta, indent=1, sort_keys=True, default=str))
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: Union[str, Path]) -> "Embeddings":
        directory = Path(directory)
        with np.load(directory / TABLES_FILE, allow_pickle=False) as z:
            tables = {k[len("table__"):]: z[k] for k in z.files if k.startswith("table__")}
            defaults = {k[len("default__"):]: z[k] for k in z.files if k.startswith("default__")}
        with np.load(directory / ID_MAPS_FILE, allow_pickle=False) as z:
            id_maps = {t: z[t] for t in z.files}
        meta = json.loads((directory / META_FILE).read_text()) if (directory / META_FILE).exists() else {}
        return cls(tables=tables, id_maps=id_maps, defaults=defaults, meta=meta)


def load_active(database_url: str, name: str = MODEL_NAME) -> Optional[Embeddings]:
    """The active version's embeddings (registry ``name``), or ``None`` when there is none."""
    from store.registry import active_model
    row = active_model(database_url, name)
    if row is None or not Path(row["artifact_path"]).exists():
        return None
    emb = Embeddings.load(row["artifact_path"])
    emb.meta.setdefault("version", row["version"])
    return emb


__all__ = ["Embeddings", "load_active", "MODEL_NAME"]

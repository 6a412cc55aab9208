"""Embedding tables as versioned artifacts (numpy only: the API and the ranker import this).

:class:`Embeddings` holds one float32 table per node type, the original ids of its rows and a
default vector per type (for ids the table does not know). On disk (``save`` / ``load``)::

    <dir>/embeddings.npz   table__<node_type> [n, dim] float32, default__<node_type> [dim]
    <dir>/id_maps.npz      <node_type> [n] int64 original ids (row i ↔ id_maps[t][i])
    <dir>/meta.json        config, counts, training figures, data version

:func:`train_and_register_embeddings` is the job a Celery worker runs: event log → graph →
Metapath2vec (warm-started from the active version) → artifact → registry, idempotent per data
version. torch / torch_geometric are imported inside it only.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


def _newest(events) -> Optional[str]:
    """ISO time of the newest event trained on (the next version's held-out window starts there)."""
    if events is None or not len(events):
        return None
    import pandas as pd
    return pd.Timestamp(events["ts"].max()).isoformat()


def _config_key(config) -> str:
    from dataclasses import asdict
    return hashlib.sha1(json.dumps(asdict(config), sort_keys=True, default=str).encode()).hexdigest()[:8]


def train_and_register_embeddings(settings, *, config=None, end: Optional[datetime] = None,
                                  window_days: Optional[float] = None, warm_start: bool = True,
                                  gate: bool = True, holdout_frac: float = 0.1,
                                  progress: bool = False) -> dict:
    r"""The graph job: train Metapath2vec embeddings on the event log and make them the active version.

    1. key = ``store.ingest.data_version`` (+ ``end`` / window / config fingerprint). When the
       registry already has ``metapath2vec`` trained on that key, return that row (no-op); two
       workers racing on one key are serialised by ``store.jobs.job_run``.
    2. events (``ts < end``, the last ``window_days`` when given) + catalog →
       :func:`graph.build.build_graph`.
    3. :func:`graph.metapath2vec.train_metapath2vec`, warm-started from the active version
       (ids that still exist keep their place in the space).
    4. ``gate`` (default): :func:`graph.gate.gate_embeddings` trains a candidate on the events
       before a held-out cut and scores it head to head with the active version on the new links
       after it; a candidate with a lower link AUC is registered but NOT promoted (the active
       keeps serving). One that passes is refit on all events (warm-started from the candidate).
    5. save to ``settings.artifact_dir / "embeddings" / <version>``, register (metrics = counts,
       loss, figures, ``trained_until``, ``holdout``, ``versus_active``, ``gate``) and promote
       when the gate passed.

    Returns the registry row (``dict``: name, version, artifact_path, metrics, status,
    data_version, created_at) with ``"skipped": True`` when nothing was trained.
    """
    from store.ingest import data_version, load_catalog, load_events, training_key
    from store.jobs import job_run
    from store.registry import active_model, already_trained, promote, register_model

    from .build import build_graph
    from .gate import GateResult, gate_embeddings
    from .metapath2vec import M2VConfig, train_metapath2vec

    t0 = time.perf_counter()
    config = config or M2VConfig()
    url = settings.database_url
    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    if window_days is not None:       # the window is relative to end: end matters even when it cuts nothing
        key = data_version(url) + (f"@{end.isoformat()}" if end is not None else "") + f"/{float(window_days):g}d"
    else:
        key = training_key(url, end)
    key += f"#{_config_key(config)}"
    done = already_trained(url, MODEL_NAME, key)
    if done is not None:
        log.info("train_and_register_embeddings: %s already trained (%s)", key, done["version"])
        return done
    with job_run(url, "train_graph_embeddings", key) as job:
        if job.skip:
            return already_trained(url, MODEL_NAME, key, job.detail)
        start = None
        if window_days is not None:
            from datetime import timedelta
            start = (end or datetime.now(timezone.utc)) - timedelta(days=float(window_days))
        events = load_events(url, start=start, end=end, types=["watch", "click", "item_click", "purchase"])
        catalog = load_catalog(url)
        graph = build_graph(events, catalog)
        active = load_active(url)
        previous = active if warm_start else None
        if previous is not None and previous.dim != config.dim:
            log.info("train_and_register_embeddings: active version has dim %d != %d; cold start",
                     previous.dim, config.dim)
            previous = None
        if gate and active is not None:
            verdict = gate_embeddings(events, catalog, config, active_model(url, MODEL_NAME), active,
                                      warm_start=previous, holdout_frac=holdout_frac)
        else:
            verdict = GateResult(True, "gate off" if not gate else "no active version")
        log.info("train_and_register_embeddings: gate %s: %s", "passed" if verdict.passed else "FAILED", verdict.why)
        if verdict.passed:           # the served version is refit on everything (warm start: the candidate)
            emb = train_metapath2vec(graph, config, warm_start=verdict.candidate or previous)
        else:                        # kept for inspection, never served: the candidate itself
            emb = verdict.candidate
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{stamp}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        emb.meta.update({"version": version, "data_version": key,
                         "warm_start_from": previous.meta.get("version") if previous is not None else None})
        path = Path(settings.artifact_dir) / "embeddings" / version
        emb.save(path)
        train = emb.meta.get("train", {})
        metrics = {"nodes": graph.counts["nodes"], "edges": graph.counts["num_edges"],
                   "events": graph.counts["events"], "dim": emb.dim,
                   "loss": train.get("final_loss"), "epoch_seconds": train.get("epoch_seconds"),
                   "walks_per_s": train.get("walks_per_s"), "untrained": train.get("untrained"),
                   "warm_start_from": emb.meta["warm_start_from"],
                   "trained_until": _newest(events), "gate": {"passed": verdict.passed, "why": verdict.why},
                   **verdict.metrics, "seconds": round(time.perf_counter() - t0, 2)}
        job.check()                   # the lease is still ours: publish
        row = register_model(url, MODEL_NAME, version, str(path), metrics=metrics, data_version=key)
        if verdict.passed:
            row = promote(url, MODEL_NAME, version)
        job.detail.update({"version": version, "artifact_path": str(path)})
        msg = (f"metapath2vec {version}: {graph.counts['num_edges']} edges, {sum(graph.num_nodes.values())} nodes, "
               f"{metrics['seconds']}s (warm start from {metrics['warm_start_from']}); "
               f"{'promoted' if verdict.passed else 'NOT promoted'}: {verdict.why}")
        log.info(msg)
        if progress:
            print(msg, flush=True)
    return dict(row, skipped=False)


__all__ = ["Embeddings", "load_active", "train_and_register_embeddings", "MODEL_NAME"]

"""Model loading, hot swap and the popularity fallback.

:class:`ModelHolder` keeps a reference to the loaded active model of one name (``ranker``: the
transformer ranker's serving form :class:`ranking.scorer.RankerScorer`; or ``gbdt``: V1). At most
every ``check_s`` seconds one request (whichever comes first; the others keep scoring with the
current reference, never waiting) asks the registry which version is active; when it changed, the
new artifact is loaded and checked BEFORE the reference is swapped in one assignment — requests in
flight finish on the model they started with, none is dropped. An artifact that fails to load is
retried with back-off (RETRY_FIRST_S doubling up to RETRY_MAX_S: a file fixed in place is picked
up, a broken one does not cost a load per check) and the previous model keeps serving; with none,
the API answers with V1 or popularity and says why.

LightGBM is imported by ``ranking.gbdt`` inside its load/predict and torch by :func:`load_ranker`,
never at import here.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

log = logging.getLogger(__name__)

POPULARITY = {"name": "popularity", "version": None, "fallback": True}
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    artifact_path: str
    model: Any
    feature_cols: tuple
    loaded_at: float
    companion: Optional[tuple] = None     # (version, path) of the companion model served with it

    def describe(self) -> dict:
        out = {"name": self.name, "version": self.version}
        if self.companion is not None:      # the ranker's Metapath2vec vectors: the active graph version
            out["graph_version"] = self.companion[0]
        return out

    def predict(self, frame, page: Optional[str] = None) -> np.ndarray:
        # one thread per call: LightGBM's OpenMP team costs more than it saves on ~200 rows, and
        # request threads must not each spawn a team (GBDTModel.predict docstring)
        if page is not None and self.name == "ranker":
            scores = self.model.predict(frame, num_threads=1, page=page)
        else:
            scores = self.model.predict(frame, num_threads=1)
        scores = np.asarray(scores, dtype=float).reshape(-1)
        if len(scores) != len(frame):
            raise ValueError(f"model returned {len(scores)} scores for {len(frame)} rows")
        return scores


def load_ranker(path: str, graph: Optional[dict] = None):
    """The serving form of a ranker version (Biasnet removed; torch imported here, not at start-up).
    ``graph``: the active Metapath2vec registry row — a ranker trained with graph vectors serves
    that version's (each training row took the newest version trained before it: at "now", the
    active one); without one it keeps the vectors saved with it."""
    import torch
    from ranking.scorer import RankerScorer
    # request threads score ~200 rows each: one intra-op thread per call is faster than a team
    # fighting over 2 cores, and keeps concurrent requests from oversubscribing
    torch.set_num_threads(1)
    graph_vectors = None
    if graph is not None:
        from graph.artifacts import Embeddings
        graph_vectors = Embeddings.load(graph["artifact_path"])
    return RankerScorer.load(path, graph_vectors=graph_vectors)


def load_gbdt(path: str):
    from ranking.gbdt import GBDTModel      # lightgbm is imported inside GBDTModel
    return GBDTModel.load(path)


class ModelHolder:
    """The active model of ``name`` with registry polling and atomic hot swap."""

    def __init__(self, settings, name: str = "gbdt", *, check_s: float = 2.0,
                 loader: Optional[Callable[..., Any]] = None, companion: Optional[str] = None):
        self.settings = settings
        self.name = name
        self.check_s = float(check_s)
        self._loader = loader or load_gbdt
        # a second registry name whose active version is loaded WITH this one (the ranker's graph
        # vectors): a new companion version swaps the model like a new version of its own;
        # loader(path, companion_row or None)
        self.companion = companion
        self._current: Optional[LoadedModel] = None
        self._reason: str = f"no active {name!r} model in the registry"
        self._checked_at: Optional[float] = None
        self._lock = threading.Lock()
        self._failed: dict = {}           # (version, artifact_path) -> (error text, retry at, back-off s)
        self._active_key = None           # the registry's active (version, path) at the last check
        self.swaps = 0

    def get(self) -> tuple[Optional[LoadedModel], Optional[str]]:
        """(model or None, reason for the fallback when None). Polls the registry when due."""
        checked = self._checked_at
        if checked is None:
            with self._lock:               # first use: everyone waits for the first load
                if self._checked_at is None:
                    self._check()
        elif time.monotonic() - checked >= self.check_s and self._lock.acquire(blocking=False):
            try:                          # one request checks; the others go on with the current model
                self._check()
            finally:
                self._lock.release()
        current = self._current
        return current, (None if current is not None else self._reason)

    def check_now(self) -> Optional[LoadedModel]:
        with self._lock:
            self._check()
        return self._current

    def _check(self) -> None:
        try:
            self._check_registry()
        finally:
            self._checked_at = time.monotonic()     # set last: first-use waiters see the loaded model

    def _check_registry(self) -> None:
        from store.registry import active_model
        try:
            info = active_model(self.settings.database_url, self.name)
        except Exception as exc:       # registry unreadable: keep what we have
            log.warning("model registry check failed: %s", exc)
            if self._current is None:
                self._reason = f"model registry unavailable ({type(exc).__name__})"
            return
        if info is None:
            if self._current is not None:
                log.info("no active %s model any more: falling back to popularity", self.name)
            self._current = None
            self._reason = f"no active {self.name!r} model in the registry"
            return
        comp_row = comp_key = None
        if self.companion is not None:
            try:
                comp_row = active_model(self.settings.database_url, self.companion)
            except Exception as exc:     # unreadable: keep what we have
                log.warning("registry check of %s failed: %s", self.companion, exc)
                if self._current is not None:
                    return
            if comp_row is not None:
                comp_key = (str(comp_row["version"]), str(comp_row["artifact_path"]))
        # (version, path), + the companion's (version, path) when there is one to follow
        key = (str(info["version"]), str(info["artifact_path"])) + ((comp_key,) if self.companion else ())
        self._active_key = key
        cur = self._current
        if cur is not None and (cur.version, cur.artifact_path) + ((cur.companion,) if self.companion else ()) == key:
            return
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() < failed[1]:
            if cur is None:
                self._reason = failed[0]
            return
        t0 = time.perf_counter()
        try:
            model = self._loader(key[1], comp_row) if self.companion is not None else self._loader(key[1])
            cols = tuple(getattr(model, "feature_cols", None) or ())
            from feature_repo.features import FEATURE_COLUMNS
            if not cols:
                cols = tuple(FEATURE_COLUMNS)
            unknown = [c for c in cols if c not in FEATURE_COLUMNS]
            if unknown:
                raise ValueError(f"model needs features the API does not serve: {unknown[:5]}")
        except Exception as exc:
            text = f"active {self.name} model version {key[0]} failed to load: {type(exc).__name__}: {exc}"[:300]
            backoff = RETRY_FIRST_S if failed is None else min(failed[2] * 2, RETRY_MAX_S)
            log.error("%s; retrying in %.0f s", text, backoff)
            self._failed[key] = (text, time.monotonic() + backoff, backoff)
            if cur is None:
                self._reason = text
            return
        self._failed.pop(key, None)
        self._current = LoadedModel(self.name, key[0], key[1], model, cols, time.time(), comp_key)   # atomic swap
        self.swaps += 1
        log.info("serving %s model version %s (loaded in %.0f ms)%s", self.name, key[0],
                 (time.perf_counter() - t0) * 1000, f", replacing {cur.version}" if cur else "")
        if comp_key is not None:
            log.info("%s %s serves %s version %s", self.name, key[0], self.companion, comp_key[0])

    @property
    def failing(self) -> Optional[str]:
        """Why the registry's active version is not the one served (it failed to load), else None."""
        f = self._failed.get(self._active_key) if self._active_key is not None else None
        return f[0] if f is not None else None

    def info(self) -> dict:
        cur = self._current
        return {"name": self.name, "version": None if cur is None else cur.version,
                "fallback_reason": None if cur is not None else self._reason, "swaps": self.swaps,
                "failed_versions": sorted({k[0] for k in self._failed})}

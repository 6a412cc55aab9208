"""The serving form of the ranker: no Biasnet, candidate-side encodings cached, objectives fused.

:class:`RankerScorer` is built from a trained :class:`ranking.model.ranker.Ranker` with
``Ranker.without_biasnet()`` — the position tower exists only to explain the training labels; at
serving every candidate is scored as if shown in the same slot (the debiased logit), and the
scorer holds no Biasnet parameter at all.

Per request (:meth:`RankerScorer.predict`): the assembled frame (Feast user rows + the snapshot's
stream rows, :func:`feature_repo.online.assemble`, list columns included) → the version's
:class:`ranking.dataset.RankerInputs` (the same transform as training) → the model → per-task
outputs → one score by objective fusion::

    score = w_ctr · log pCTR + w_cvr · log pCVR + w_stay · log(1 + stay seconds)

i.e. the weighted product pCTR^w_ctr · pCVR^w_cvr · (1 + stay)^w_stay, with weights per page
(``fusion = {"default": {...}, "<page>": {...}}``; tasks the model lacks are skipped). A version
trained with a personalised fusion network (``ranking.fusion``, ``fusion_net.pt`` in its directory)
takes the weights from the user's features instead, on every page: ``score = Σ_t w_t(user) · f_t``
with the same three task scores (an explicit ``fusion=`` given to :meth:`RankerScorer.load` wins).

Candidate cache: the stream-side part of the model input that only depends on the model version
(stream id, category, Metapath2vec vector, core products: ``Ranker.encode_candidates``) is
computed once per (version, stream) and reused; the per-request part (the stream's real-time
products, the user side) is not cached. The outputs with and without the cache are equal.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .objectives import DEFAULT_FUSION, fuse

log = logging.getLogger(__name__)

# the candidate-side inputs that depend on the model version only (rt_items changes every second)
STATIC_CANDIDATE_KEYS = ("stream_id", "category", "m2v_stream", "core_items")


class RankerScorer:
    """Biasnet-free ranker + its input pipeline + fusion weights (one registry version)."""

    def __init__(self, model, inputs, *, fusion: Optional[dict] = None, version: Optional[str] = None,
                 cache_candidates: bool = True, fusion_net=None):
        if getattr(model, "biasnet", None) is not None:
            raise ValueError("the scorer takes the serving form: call Ranker.without_biasnet() first "
                             "(or RankerScorer.from_trained)")
        self.model = model.eval()
        self.inputs = inputs
        self.fusion = dict(fusion or DEFAULT_FUSION)
        self.fusion_net = fusion_net.eval() if fusion_net is not None else None
        self.version = version
        self.cache_candidates = cache_candidates
        self._cache: dict = {}            # (stream, category) key -> row of self._table
        self._table: dict = {}            # encode_candidates key -> [R, ...] tensor of cached rows
        self._cache_lock = threading.Lock()
        self._local = threading.local()    # per request thread: the last call's phase timings
        from feature_repo.features import FEATURE_COLUMNS
        self.feature_cols = [c for c in inputs.dense_cols if c in FEATURE_COLUMNS]
        seq = getattr(model, "sequence", None)
        if seq is not None:             # time the transformer's share: the ranker calls these methods
            for name in ("embed_tokens", "embed_target", "encode", "pool"):
                setattr(seq, name, self._timed(getattr(seq, name)))

    def _timed(self, fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.seq_s = getattr(self._local, "seq_s", 0.0) + time.perf_counter() - t0
        return run

    @property
    def last_timing(self) -> dict:
        """{inputs_ms, model_ms, transformer_ms} of this thread's last :meth:`outputs` call."""
        return getattr(self._local, "timing", {})

    @classmethod
    def from_trained(cls, model, inputs, **kw) -> "RankerScorer":
        return cls(model.without_biasnet(), inputs, **kw)

    @classmethod
    def load(cls, path, *, graph_vectors=None, **kw) -> "RankerScorer":
        """A saved version; ``graph_vectors`` (graph.artifacts.Embeddings, e.g. the active graph
        version) replace the Metapath2vec vectors saved with it when it takes them (same dim)."""
        from .artifacts import load_ranker
        model, inputs, meta = load_ranker(path)
        if graph_vectors is not None and inputs.m2v_user is not None:
            if graph_vectors.dim == inputs.m2v_user.shape[1]:
                inputs = inputs.with_embeddings(graph_vectors)
            else:                           # a graph job with another dim: the vectors it was trained with
                log.warning("graph version %s has dim %d, ranker %s takes %d: serving its saved vectors",
                            graph_vectors.meta.get("version"), graph_vectors.dim, Path(path).name,
                            inputs.m2v_user.shape[1])
        fusion = kw.pop("fusion", None)
        fusion_net = None
        if fusion is None:
            from .fusion import load_fusion
            fusion_net = load_fusion(path)
        fusion = fusion or meta.get("fusion") or None
        return cls(model.without_biasnet(), inputs, fusion=fusion, version=Path(path).name, fusion_net=fusion_net, **kw)

    # ------------------------------------------------------------------ candidate cache
    def _candidates(self, batch: dict):
        """(cand dict, cand_index) for the rows' streams: the static part from the per-version
        cache, the real-time products' tokens computed now (they change every second)."""
        import torch
        from .model.ranker import RT_TYPE
        # key = (stream, category): every unknown stream shares index 0 but keeps its own category
        sidx = batch["stream_id"].numpy() * (len(self.inputs.categories) + 1) + batch["category"].numpy()
        uniq, first, inv = np.unique(sidx, return_index=True, return_inverse=True)
        with self._cache_lock:
            # the cache is one tensor per key ([R, ...], a row per (stream, category) seen) and a
            # row index: a request gathers its rows with one index_select per key (stacking 200
            # cached rows one by one cost ~3 ms a request)
            rows = self._cache
            missing = [j for j, s in enumerate(uniq) if int(s) not in rows]
            if missing:
                take = torch.as_tensor(first[missing])
                sub = {k: batch[k].index_select(0, take) for k in STATIC_CANDIDATE_KEYS if k in batch}
                with torch.no_grad():
                    enc = self.model.encode_candidates(sub)
                base = len(rows)
                self._table = {k: (torch.cat([self._table[k], v]) if self._table else v) for k, v in enc.items()}
                for j, m in enumerate(missing):
                    rows[int(uniq[m])] = base + j
            pick = torch.as_tensor([rows[int(s)] for s in uniq], dtype=torch.long)
            cand = {k: v.index_select(0, pick) for k, v in self._table.items()}
        seq = getattr(self.model, "sequence", None)
        if seq is not None and "rt_items" in batch:
            rt = batch["rt_items"].index_select(0, torch.as_tensor(first))              # [U, Lr]
            cand["rt_items_tokens"] = seq.embed_tokens(self.model.embed_items(rt), RT_TYPE)  # [U, Lr, d]
            cand["rt_items_mask"] = rt > 0
        return cand, torch.as_tensor(inv.reshape(-1), dtype=torch.long)

    # ------------------------------------------------------------------ scoring
    def outputs(self, frame: pd.DataFrame) -> dict:
        """Per-task outputs (numpy): p_ctr, p_cvr, p_ctcvr, stay_s — debiased."""
        import torch
        from .batches import to_tensors
        t0 = time.perf_counter()
        # one LightGBM thread for the leaves of ~200 rows (see GBDTModel.predict_raw)
        x = self.inputs.transform(frame, with_position=False, num_threads=1)
        t1 = time.perf_counter()
        batch = to_tensors(x)
        ui = batch.get("user_items")
        if ui is not None and len(ui) > 1 and bool((ui == ui[:1]).all()):
            # one user's history on every row (a request): the transformer takes it as a shared
            # [1, Lu] segment and embeds / normalises / projects it once instead of B times
            aligned = [k for k in ("user_items_dt", "user_items_act") if k in batch]   # per item: shared too, or none is

            def shared(v):
                same = (v == v[:1]) | (v.isnan() & v[:1].isnan()) if v.is_floating_point() else v == v[:1]
                return bool(same.all())
            if all(shared(batch[k]) for k in aligned):
                for k in ["user_items"] + aligned:
                    batch[k] = batch[k][:1]
        self._local.seq_s = 0.0
        with torch.inference_mode():        # no autograd bookkeeping at all (a little less than no_grad)
            if self.cache_candidates and hasattr(self.model, "encode_candidates") and len(frame):
                cand, idx = self._candidates(batch)
                pred = self.model.predict(batch, cand=cand, cand_index=idx)
            else:
                pred = self.model.predict(batch)
        t2 = time.perf_counter()
        res = {k: v.double().numpy() for k, v in pred.items()}
        self._local.timing = {"inputs_ms": (t1 - t0) * 1e3, "model_ms": (t2 - t1) * 1e3,
                              "transformer_ms": self._local.seq_s * 1e3}
        return res

    def predict(self, frame: pd.DataFrame, num_threads: Optional[int] = None, page: Optional[str] = None
                ) -> np.ndarray:
        """One fused score per row of ``frame`` (higher = better)."""
        if len(frame) == 0:
            return np.zeros(0)
        if page is None and "page" in frame.columns and len(frame):
            page = str(frame["page"].iloc[0])
        out = self.outputs(frame)
        if self.fusion_net is not None:
            return self.fused_by_network(frame, out)
        weights = self.fusion.get(page or "default", self.fusion.get("default", {"ctr": 1.0}))
        return fuse(out, weights)

    def fused_by_network(self, frame: pd.DataFrame, out: dict) -> np.ndarray:
        """Σ_t w_t(user) · f_t: the personalised fusion network's weights from the rows' user features."""
        import torch
        from .fusion import task_matrix
        net = self.fusion_net
        f = task_matrix(out["p_ctr"], out.get("p_cvr"), out.get("stay_s"), tasks=net.tasks)
        with torch.inference_mode():
            return net.score(net.features(frame), torch.as_tensor(f, dtype=torch.float32)).double().numpy()


__all__ = ["RankerScorer", "fuse", "DEFAULT_FUSION"]

"""On-disk exchange format between bench/quality.py (product env) and bench/peers.py (.bench-venv).

A dataset is a directory holding ``data.npz`` (the arrays) and ``meta.json``. This module imports
only numpy and json so that both environments can use it.

Arrays (N rows):

- ``user_id``, ``stream_id``, ``category``: int64 [N], contiguous ids 1..V, 0 = unknown/padding.
  ``meta["vocab"] = {"user_id": V_u + 1, "stream_id": ..., "category": ...}`` (embedding rows,
  padding row 0 included).
- ``dense``: float32 [N, D], already normalised, no NaN; ``meta["dense_names"]`` has D names.
- ``hist_streams``: int64 [N, L], the user's recent streams (stream_id space, 0 = padding,
  most recent first).
- labels: ``click`` float32 [N]; optional ``purchase`` float32 [N] (a purchase after this
  impression, on all impressions) and ``stay`` float32 [N] (log1p seconds, 0 when not clicked).
- ``split``: int8 [N]: 0 train, 1 valid (early stopping / model selection), 2 test.

``meta["tasks"]`` lists the label arrays to model, e.g. ``["click"]`` or
``["click", "purchase", "stay"]``; ``meta["name"]`` names the dataset.
"""
from __future__ import annotations

import json
import os

import numpy as np

ID_COLUMNS = ("user_id", "stream_id", "category")
TASKS = ("click", "purchase", "stay")
SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2

_DTYPES = {
    "user_id": np.int64,
    "stream_id": np.int64,
    "category": np.int64,
    "hist_streams": np.int64,
    "dense": np.float32,
    "click": np.float32,
    "purchase": np.float32,
    "stay": np.float32,
    "split": np.int8,
}


def validate(arrays: dict, meta: dict) -> None:
    """Raise ValueError when ``arrays``/``meta`` do not follow the format above."""
    required = list(ID_COLUMNS) + ["dense", "hist_streams", "click", "split"]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(f"peer dataset: missing arrays {missing}")
    n = len(arrays["click"])
    for k, a in arrays.items():
        if len(a) != n:
            raise ValueError(f"peer dataset: {k} has {len(a)} rows, click has {n}")
    for k in ID_COLUMNS:
        a = arrays[k]
        if a.ndim != 1:
            raise ValueError(f"peer dataset: {k} must be 1-D")
        vocab = meta.get("vocab", {}).get(k)
        if vocab is None:
            raise ValueError(f"peer dataset: meta['vocab'] has no {k}")
        if n and (a.min() < 0 or a.max() >= vocab):
            raise ValueError(f"peer dataset: {k} ids outside [0, {vocab})")
    hist = arrays["hist_streams"]
    if hist.ndim != 2:
        raise ValueError("peer dataset: hist_streams must be [N, L]")
    if n and hist.size and (hist.min() < 0 or hist.max() >= meta["vocab"]["stream_id"]):
        raise ValueError("peer dataset: hist_streams ids outside the stream_id vocab")
    dense = arrays["dense"]
    if dense.ndim != 2:
        raise ValueError("peer dataset: dense must be [N, D]")
    if len(meta.get("dense_names", [])) != dense.shape[1]:
        raise ValueError("peer dataset: meta['dense_names'] length != dense.shape[1]")
    if not np.isfinite(dense).all():
        raise ValueError("peer dataset: dense has NaN/inf")
    tasks = meta.get("tasks")
    if not tasks or "click" not in tasks:
        raise ValueError("peer dataset: meta['tasks'] must include 'click'")
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"peer dataset: unknown task {t!r}")
        if t not in arrays:
            raise ValueError(f"peer dataset: task {t!r} has no label array")
    if not set(np.unique(arrays["split"]).tolist()) <= {SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST}:
        raise ValueError("peer dataset: split values must be 0, 1 or 2")


def save_dataset(path_dir: str, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` (cast to the format's dtypes) and ``meta`` under ``path_dir``."""
    arrays = {k: np.ascontiguousarray(np.asarray(v), dtype=_DTYPES.get(k)) for k, v in arrays.items()}
    meta = dict(meta)
    meta.setdefault("name", os.path.basename(os.path.normpath(path_dir)))
    meta.setdefault("dense_names", [f"dense_{i}" for i in range(arrays["dense"].shape[1])])
    meta["n_rows"] = int(len(arrays["click"]))
    meta["hist_len"] = int(arrays["hist_streams"].shape[1])
    meta["split_counts"] = {str(s): int((arrays["split"] == s).sum()) for s in (0, 1, 2)}
    validate(arrays, meta)
    os.makedirs(path_dir, exist_ok=True)
    np.savez(os.path.join(path_dir, "data.npz"), **arrays)
    with open(os.path.join(path_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def load_dataset(path_dir: str) -> tuple[dict, dict]:
    """Read a dataset written by :func:`save_dataset`; returns ``(arrays, meta)``."""
    with open(os.path.join(path_dir, "meta.json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(path_dir, "data.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    validate(arrays, meta)
    return arrays, meta

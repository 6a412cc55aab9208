"""Precomputed item vectors as ranker inputs (seed 001: multimodal item embeddings).

A file maps ``item_id → vector`` — e.g. image / title embeddings from another model —, read by
:func:`read_item_vectors`:

- ``.npz`` with arrays ``item_id [n]`` and ``vector [n, d]``;
- ``.parquet`` / ``.csv`` with a column ``item_id`` and ``d`` numeric columns (all the others).

The ranker (``RankerConfig.item_vector_dim``) adds a projection of each item's vector to its id
embedding in every item token (core products, real-time products, the user's products); items the
file does not hold get zeros. :func:`simulator_item_vectors` writes an informative file for a
simulated world (the items' category and price, through a random projection, plus noise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd


def read_item_vectors(path: Union[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """(``item_id [n]`` int64, ``vector [n, d]`` float32) from ``path``; ValueError on a bad file."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"item vector file {p} does not exist")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if "item_id" not in z.files or "vector" not in z.files:
                raise ValueError(f"{p}: an .npz item vector file holds 'item_id' and 'vector', got {z.files}")
            ids, vec = z["item_id"], z["vector"]
    elif p.suffix in (".parquet", ".csv"):
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        if "item_id" not in df:
            raise ValueError(f"{p}: no item_id column (columns: {list(df.columns)[:8]})")
        ids, vec = df["item_id"].to_numpy(), df.drop(columns=["item_id"]).to_numpy(dtype=np.float64)
    else:
        raise ValueError(f"{p}: item vectors are read from .npz, .parquet or .csv, not {p.suffix or 'no suffix'}")
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    vec = np.asarray(vec, dtype=np.float32)
    if vec.ndim != 2 or len(vec) != len(ids) or vec.shape[1] == 0:
        raise ValueError(f"{p}: {len(ids)} item ids for vectors of shape {vec.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{p}: item ids repeat")
    if not np.isfinite(vec).all():
        raise ValueError(f"{p}: vectors hold NaN or inf")
    return ids, vec


def item_table(item_ids_vocab: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``[1 + len(vocab), d]`` float32: row 0 zeros (padding), row i the vector of the vocabulary's
    i-th item (zeros when the file does not hold it)."""
    out = np.zeros((len(item_ids_vocab) + 1, vectors.shape[1]), np.float32)
    order = np.argsort(ids)
    sid = ids[order]
    pos = np.minimum(np.searchsorted(sid, item_ids_vocab), max(len(sid) - 1, 0))
    hit = (sid[pos] == item_ids_vocab) if len(sid) else np.zeros(len(item_ids_vocab), bool)
    out[1:][hit] = vectors[order[pos[hit]]]
    return out


def simulator_item_vectors(items: pd.DataFrame, dim: int = 16, noise: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """An informative item vector file for a simulated catalog (``item_id, category, price``): a
    random projection of (one-hot category, standardised log price) + Gaussian noise."""
    rng = np.random.default_rng(seed)
    cats = pd.Categorical(items["category"])
    onehot = np.eye(len(cats.categories))[cats.codes]
    lp = np.log1p(items["price"].to_numpy(dtype=np.float64)) if "price" in items else np.zeros(len(items))
    lp = (lp - lp.mean()) / (lp.std() + 1e-9)
    x = np.column_stack([onehot, lp])
    proj = rng.normal(size=(x.shape[1], dim)) / np.sqrt(x.shape[1])
    vec = x @ proj + noise * rng.normal(size=(len(items), dim))
    out = pd.DataFrame(vec.astype(np.float32), columns=[f"v{i}" for i in range(dim)])
    out.insert(0, "item_id", items["item_id"].to_numpy(dtype=np.int64))
    return out


__all__ = ["read_item_vectors", "item_table", "simulator_item_vectors"]

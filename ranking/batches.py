"""Numpy batches to torch and model outputs back, in chunks (training, evaluation and serving share it)."""
from __future__ import annotations

import numpy as np


def to_tensors(batch: dict, rows=None) -> dict:
    import torch
    out = {}
    for k, v in batch.items():
        a = v if rows is None else v[rows]
        out[k] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def _n_rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


def predict_batches(model, batch: dict, *, with_bias: bool = False, batch_size: int = 8192) -> dict:
    """Model outputs (numpy) for every row of ``batch``, eval mode, no grad, in chunks."""
    import torch
    model.eval()
    n = _n_rows(batch)
    parts: dict = {}
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            out = model(to_tensors(batch, slice(lo, lo + batch_size)), with_bias=with_bias)
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == min(batch_size, n - lo):
                    parts.setdefault(k, []).append(v.detach().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


__all__ = ["to_tensors", "predict_batches"]

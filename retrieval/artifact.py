"""A trained two-tower on disk and in a serving process: ``model.pt`` (config, weights, the stream
ids of its rows) in a version folder; :class:`RetrievalModel` computes user vectors from the
Feast ``user_recent`` lists and stream vectors by stream id.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from .data import Vocab, gap_bucket
from .model import TwoTower, TwoTowerConfig

MODEL_FILE = "model.pt"


def save(model: TwoTower, vocab: Vocab, directory: Union[str, Path], meta: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config_dict(), "state": model.state_dict(), "stream_ids": vocab.ids,
                "meta": meta}, directory / MODEL_FILE)
    (directory / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    return directory


class RetrievalModel:
    """A loaded two-tower, eval mode, one thread's worth of work per call.

    ``user_vectors(recent_streams, recent_ts, now_s)``: the user's lists as Feast serves them (most
    recent first) → ``[K, d]``; ``stream_vectors(ids)`` → ``[n, d]`` (unknown ids: their row 0 —
    a neutral vector the index never needs to hold); ``known(ids)``: which ids have a row.
    """

    def __init__(self, path: Union[str, Path]):
        path = Path(path)
        blob = torch.load(path / MODEL_FILE if path.is_dir() else path, map_location="cpu", weights_only=False)
        self.cfg = TwoTowerConfig(**blob["config"])
        self.model = TwoTower(self.cfg)
        self.model.load_state_dict(blob["state"])
        self.model.eval()
        self.vocab = Vocab(blob["stream_ids"])
        self.meta = blob.get("meta", {})
        with torch.no_grad():
            self._streams = self.model.all_streams().numpy().astype(np.float32)     # [N + 1, d]

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def known(self, ids: Sequence[int]) -> np.ndarray:
        return self.vocab.rows(ids) > 0

    def stream_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self._streams[self.vocab.rows(ids)]

    @torch.no_grad()
    def user_vectors(self, recent_streams: Sequence[int], recent_ts: Sequence[int], now_s: float) -> np.ndarray:
        L = self.cfg.seq_len
        ids = list(recent_streams)[:L][::-1]                      # oldest first, latest last
        ts = list(recent_ts)[:L][::-1]
        if len(ts) != len(ids):                                   # (lists from before the timestamps existed)
            ts = [now_s] * len(ids)
        rows = np.zeros((1, L), np.int64)
        gap = np.zeros((1, L), np.int64)
        if ids:
            rows[0, L - len(ids):] = self.vocab.rows(ids)
            gap[0, L - len(ids):] = gap_bucket(now_s - np.asarray(ts, dtype=np.float64))
        long = np.zeros((1, self.cfg.long_len), np.int64)
        k = min(self.cfg.long_len, L)
        long[0, self.cfg.long_len - k:] = rows[0, L - k:]
        u = self.model.users(torch.as_tensor(rows), torch.as_tensor(gap), torch.as_tensor(long))
        return u[0].numpy()


def load(path) -> RetrievalModel:
    return RetrievalModel(path)


__all__ = ["save", "load", "RetrievalModel", "MODEL_FILE"]

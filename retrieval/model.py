r"""The two-tower retrieval model (PWPRec-style user tower; Yi et al. 2019 logQ-corrected softmax).

Stream tower: :math:`s = \mathrm{norm}(\mathrm{MLP}([e_{id}; e_{cat}; W_g g; x_{stats}]))` — an id
embedding, the category's, the stream's Metapath2vec vector :math:`g` (frozen, projected) and its
statistics. User tower (the eBay PWPRec shape): the user's last ``L`` sessions as tokens
:math:`e_{id} + e_{cat} + e_{gap} + e_{pos}` followed by a learned *query* token, a causal
transformer over them; the short-term vector is the query token's output,

.. math::  u_{short} = \mathrm{Transformer}_{causal}(x_1 .. x_L, q)_{L+1}

the long-term vector a masked mean of the last ``Lh`` sessions' stream embeddings, and the two are
fused by a learned gate :math:`u = g \odot u_{short} + (1 - g) \odot W u_{long}`,
:math:`g = \sigma(W_f [u_{short}; u_{long}])`. The multi-interest variant (``interests = K > 1``)
reads ``K`` vectors from the transformer's outputs with ``K`` learned queries (multi-head
attention pooling, as ComiRec-SA / PWPRec's K interests), each fused with the long-term vector;
its score is the max over the interests, :math:`\max_k u_k^\top s`, and training uses the
interest closest to the target (label-aware, MIND).

Shapes: ``seq, gap [B, L]``, ``long [B, Lh]`` stream rows (0 = padding) → user ``[B, K, d]``;
stream rows ``[N]`` → ``[N, d]``; all vectors L2-normalised.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .data import GAP_BUCKETS


@dataclass
class TwoTowerConfig:
    n_streams: int                 # rows 1..n_streams (0 = padding)
    n_categories: int = 1          # category rows 1..n (0 = unknown)
    dim: int = 64
    seq_len: int = 20
    long_len: int = 100
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    interests: int = 1             # K > 1: the multi-interest user tower
    graph_dim: int = 0             # Metapath2vec vector size (0: none)
    n_stats: int = 0               # statistics per stream (0: none)
    time_gaps: bool = True         # the time-gap encoding of the tokens
    long_short: bool = True        # fuse the long-term vector


class StreamTower(nn.Module):
    """Stream rows ``[N]`` → normalised vectors ``[N, d]``; the tables are buffers set by
    :meth:`set_features` (category ``[S+1]``, graph ``[S+1, gd]``, stats ``[S+1, ns]``)."""

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.id_emb = nn.Embedding(cfg.n_streams + 1, d, padding_idx=0)
        self.cat_emb = nn.Embedding(cfg.n_categories + 1, d, padding_idx=0)
        self.register_buffer("category", torch.zeros(cfg.n_streams + 1, dtype=torch.long))
        self.register_buffer("graph", torch.zeros(cfg.n_streams + 1, max(cfg.graph_dim, 1)))
        self.register_buffer("stats", torch.zeros(cfg.n_streams + 1, max(cfg.n_stats, 1)))
        extra = (cfg.graph_dim if cfg.graph_dim else 0) + (cfg.n_stats if cfg.n_stats else 0)
        self.mlp = nn.Sequential(nn.Linear(2 * d + extra, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.id_emb.weight, std=0.05)
        nn.init.normal_(self.cat_emb.weight, std=0.05)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
            self.cat_emb.weight[0].zero_()

    def set_features(self, category=None, graph=None, stats=None) -> None:
        with torch.no_grad():
            if category is not None:
                self.category.copy_(torch.as_tensor(category, dtype=torch.long))
            if graph is not None and self.cfg.graph_dim:
                self.graph.copy_(torch.as_tensor(graph, dtype=torch.float32))
            if stats is not None and self.cfg.n_stats:
                self.stats.copy_(torch.as_tensor(stats, dtype=torch.float32))

    def token(self, rows: torch.Tensor) -> torch.Tensor:
        """The raw (un-projected) embedding of stream rows, for the user tower's tokens: ``[..., d]``."""
        return self.id_emb(rows) + self.cat_emb(self.category[rows])

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        parts = [self.id_emb(rows), self.cat_emb(self.category[rows])]
        if self.cfg.graph_dim:
            parts.append(self.graph[rows])
        if self.cfg.n_stats:
            parts.append(self.stats[rows])
        return F.normalize(self.mlp(torch.cat(parts, dim=-1)), dim=-1)

    def __repr__(self) -> str:
        c = self.cfg
        return f"StreamTower(streams={c.n_streams}, dim={c.dim}, graph_dim={c.graph_dim}, n_stats={c.n_stats})"


class UserTower(nn.Module):
    """``(seq, gap [B, L], long [B, Lh])`` → ``[B, K, d]`` normalised interests (module docstring)."""

    def __init__(self, cfg: TwoTowerConfig, streams: StreamTower):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.streams = [streams]              # shared token embeddings (a list: not a second submodule)
        self.gap_emb = nn.Embedding(GAP_BUCKETS, d)
        self.pos_emb = nn.Embedding(cfg.seq_len + 1, d)
        self.query = nn.Parameter(torch.zeros(d))
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        if cfg.interests > 1:
            self.interest_q = nn.Parameter(torch.zeros(cfg.interests, d))
            self.pool = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.long_proj = nn.Linear(d, d)
        self.gate = nn.Linear(2 * d, d)
        self.empty_long = nn.Parameter(torch.zeros(d))
        self.out = nn.Linear(d, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gap_emb.weight, std=0.05)
        nn.init.normal_(self.pos_emb.weight, std=0.05)
        nn.init.normal_(self.query, std=0.05)
        if self.cfg.interests > 1:
            nn.init.normal_(self.interest_q, std=0.5)

    def forward(self, seq: torch.Tensor, gap: torch.Tensor, long: torch.Tensor) -> torch.Tensor:
        B, L = seq.shape
        tok = self.streams[0].token(seq)                                         # [B, L, d]
        if self.cfg.time_gaps:
            tok = tok + self.gap_emb(gap)
        x = torch.cat([tok, self.query.expand(B, 1, -1)], dim=1)                 # [B, L+1, d]
        x = x + self.pos_emb.weight[None, : L + 1]
        pad = torch.cat([seq == 0, torch.zeros(B, 1, dtype=torch.bool, device=seq.device)], dim=1)
        # causal, padding keys hidden — except each position from itself: a padded position would
        # otherwise see no key at all, its softmax be NaN, and 0 · NaN spread it to every position
        # of the next layer
        eye = torch.eye(L + 1, dtype=torch.bool, device=seq.device)
        later = torch.triu(torch.ones(L + 1, L + 1, dtype=torch.bool, device=seq.device), diagonal=1)
        hidden = later[None] | (pad[:, None, :] & ~eye[None])                    # [B, L+1, L+1]
        hidden = hidden.repeat_interleave(self.cfg.heads, dim=0)                 # [B·heads, L+1, L+1]
        h = self.norm(self.encoder(x, mask=hidden))                              # [B, L+1, d]
        if self.cfg.interests > 1:
            q = self.interest_q.expand(B, -1, -1)                                # [B, K, d]
            short, _ = self.pool(q, h, h, key_padding_mask=pad)                  # [B, K, d]
        else:
            short = h[:, -1:, :]                                                 # [B, 1, d]
        if self.cfg.long_short:
            lt = self.streams[0].token(long)                                     # [B, Lh, d]
            m = (long > 0).unsqueeze(-1).float()
            n = m.sum(1)
            mean = (lt * m).sum(1) / n.clamp(min=1.0)
            mean = torch.where(n > 0, mean, self.empty_long.expand(B, -1))       # [B, d]
            lv = self.long_proj(mean).unsqueeze(1).expand_as(short)              # [B, K, d]
            g = torch.sigmoid(self.gate(torch.cat([short, lv], dim=-1)))
            short = g * short + (1 - g) * lv
        return F.normalize(self.out(short), dim=-1)

    def __repr__(self) -> str:
        c = self.cfg
        return (f"UserTower(seq_len={c.seq_len}, long_len={c.long_len}, layers={c.layers}, heads={c.heads}, "
                f"interests={c.interests}, time_gaps={c.time_gaps}, long_short={c.long_short})")


class TwoTower(nn.Module):
    """Both towers; :meth:`score` is :math:`\\max_k u_k^\\top s` (``[B, N]``)."""

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__()
        self.cfg = cfg
        self.stream_tower = StreamTower(cfg)
        self.user_tower = UserTower(cfg, self.stream_tower)

    def users(self, seq, gap, long) -> torch.Tensor:
        return self.user_tower(seq, gap, long)

    def all_streams(self) -> torch.Tensor:
        """``[N + 1, d]`` every stream row's vector (row 0: padding)."""
        return self.stream_tower(torch.arange(self.cfg.n_streams + 1, device=self.stream_tower.category.device))

    @staticmethod
    def score(users: torch.Tensor, streams: torch.Tensor) -> torch.Tensor:
        """``users [B, K, d]``, ``streams [N, d]`` → ``[B, N]`` max over interests."""
        return torch.einsum("bkd,nd->bkn", users, streams).amax(dim=1)

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def __repr__(self) -> str:
        return f"TwoTower(\n  {self.stream_tower!r},\n  {self.user_tower!r}\n)"


def build(cfg: TwoTowerConfig, *, category=None, graph=None, stats=None, device: Optional[str] = None) -> TwoTower:
    model = TwoTower(cfg)
    model.stream_tower.set_features(category, graph, stats)
    return model.to(device) if device else model


__all__ = ["TwoTowerConfig", "StreamTower", "UserTower", "TwoTower", "build"]

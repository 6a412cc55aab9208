r"""Behavior Sequence Transformer over the user's recent streams, from BST (`"Behavior Sequence
Transformer for E-commerce Recommendation in Alibaba" <https://arxiv.org/abs/1905.06874>`_, Chen et
al. DLP-KDD 2019) — the alternative to DIN's target attention (ranking.model.target_attention).

DIN scores each behaviour against the candidate alone; BST lets the behaviours and the candidate
attend to each other. The sequence is the user's L most recent streams followed by the candidate,
each with a learned recency (position) embedding; one transformer encoder layer (multi-head
self-attention, feed-forward, residuals, LayerNorm) runs over it with the padding masked, and the
candidate's output token is the user's interest *as it bears on this candidate*:

.. math::
    H = \text{Encoder}\big([\mathbf{k}_1 + \mathbf{p}_1; \dots; \mathbf{k}_L + \mathbf{p}_L;\;
        \mathbf{q} + \mathbf{p}_0]\big), \qquad \mathbf{v} = H_{L+1}

A row without real behaviours attends to the candidate alone (never NaN). The output has DIN's
shape, so the ranker uses either in the same place (``RankerConfig.user_sequence``).

Shapes: ``query [B, d]``, ``keys [B, L, d]``, ``mask [B, L]`` (bool, True = real) → ``[B, d]``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BehaviorSequenceTransformer(nn.Module):
    r"""BST's sequence block (module docstring).

    Args:
        d (int): token size (query / key size).
        max_len (int): longest behaviour sequence (recency embeddings; longer inputs are cut).
        n_heads (int): attention heads (``d`` divisible by it).
        ff (int): the feed-forward width (default ``2 d``).
        dropout (float): dropout inside the layer.
    """

    def __init__(self, d: int, max_len: int = 20, n_heads: int = 2, ff: int = 0, dropout: float = 0.0):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d={d} is not divisible by n_heads={n_heads}")
        self.d, self.max_len, self.n_heads = d, max_len, n_heads
        self.recency = nn.Embedding(max_len + 1, d)                 # row 0: the candidate itself
        self.layer = nn.TransformerEncoderLayer(d, n_heads, dim_feedforward=ff or 2 * d, dropout=dropout,
                                                batch_first=True, norm_first=False)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.recency.weight, std=self.d ** -0.5)
        for m in self.layer.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()
        self.layer.self_attn._reset_parameters()

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        keys, mask = keys[:, :self.max_len], mask[:, :self.max_len].bool()
        B, L, d = keys.shape
        pos = torch.arange(1, L + 1, device=keys.device)
        tokens = torch.cat([keys + self.recency(pos), (query + self.recency.weight[0]).unsqueeze(1)], 1)  # [B, L+1, d]
        pad = torch.cat([~mask, torch.zeros(B, 1, dtype=torch.bool, device=mask.device)], 1)            # [B, L+1]
        h = self.layer(tokens, src_key_padding_mask=pad)                                                # [B, L+1, d]
        return h[:, -1]                                                                                 # [B, d]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(d={self.d}, max_len={self.max_len}, heads={self.n_heads})"


__all__ = ["BehaviorSequenceTransformer"]

r"""Target attention over the user's history, from DIN (`"Deep Interest Network for Click-Through
Rate Prediction" <https://arxiv.org/abs/1706.06978>`_, Zhou et al. KDD 2018).

The user's interest is not one vector: it depends on the candidate. DIN's *local activation
unit* scores every behaviour :math:`\mathbf{k}_i` against the candidate :math:`\mathbf{q}` with a
small MLP and pools the behaviours with those scores:

.. math::
    a_i = \text{MLP}\big([\mathbf{q};\, \mathbf{k}_i;\, \mathbf{q} - \mathbf{k}_i;\,
          \mathbf{q} \odot \mathbf{k}_i]\big) \in \mathbb{R}, \qquad
    \mathbf{v} = \sum_{i \in R} a_i\, \mathbf{k}_i

over the real (non-padding) keys :math:`R`. DIN deliberately keeps the weights un-normalised (the
total weight carries how strongly the history relates to the candidate); ``softmax=True``
normalises them over :math:`R` instead. Padding keys get weight exactly 0 and a row without real
keys returns zeros (never NaN).

The MLP's hidden activation is Dice (the paper's data-adaptive PReLU) or PReLU:

.. math::
    \text{Dice}(s) = p(s)\, s + (1 - p(s))\, \alpha s, \qquad
    p(s) = \sigma\Big(\frac{s - \mathbb{E}[s]}{\sqrt{\text{Var}[s] + \epsilon}}\Big)

with per-channel :math:`\alpha`, batch statistics in training and their moving averages in
evaluation. Here the statistics are taken over the REAL keys only, so padding never moves them.

Shapes: ``query [B, d]``, ``keys [B, L, d]``, ``mask [B, L]`` (bool, True = real) →
``[B, d]`` (and ``weights [B, L]`` with ``return_weights=True``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Dice(nn.Module):
    r"""Dice activation (DIN, Zhou et al. 2018) with masked batch statistics.

    ``x [N, C]``, ``mask [N]`` (bool, rows that count for the statistics; all when ``None``) →
    ``[N, C]``. Training: statistics of the masked rows (updating the moving averages, momentum
    as BatchNorm); with fewer than 2 masked rows, or in evaluation: the moving averages.
    """

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.alpha = nn.Parameter(torch.empty(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.alpha)           # starts as a smooth ReLU-like gate, as in DIN's code
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        mean, var = self.running_mean, self.running_var                          # [C]
        if self.training:
            w = (torch.ones(x.shape[0], device=x.device, dtype=x.dtype) if mask is None
                 else mask.to(x.dtype)).unsqueeze(-1)                             # [N, 1]
            n = w.sum()
            if n.item() >= 2:
                mean = (x * w).sum(0) / n                                          # [C]
                var = ((x - mean) ** 2 * w).sum(0) / n                             # [C] biased, as BN
                with torch.no_grad():
                    unbiased = var * n / (n - 1)
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    self.running_var.lerp_(unbiased.detach(), self.momentum)
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))               # [N, C]
        return p * x + (1 - p) * self.alpha * x                                   # [N, C]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_features})"


class TargetAttention(nn.Module):
    r"""DIN's local activation unit (module docstring).

    Args:
        d (int): query / key size.
        hidden (tuple): hidden sizes of the scoring MLP (input ``4 d``, output 1).
        activation (str): ``"dice"`` or ``"prelu"``.
        softmax (bool): normalise the weights over the real keys (DIN keeps them raw).

    Forward: ``query [B, d]``, ``keys [B, L, d]``, ``mask [B, L]`` → ``[B, d]``;
    ``return_weights=True`` → ``(out [B, d], weights [B, L])`` (0 on padding).
    """

    def __init__(self, d: int, hidden: Sequence[int] = (32,), activation: str = "dice",
                 softmax: bool = False):
        super().__init__()
        if activation not in ("dice", "prelu"):
            raise ValueError(f"activation must be 'dice' or 'prelu', got {activation!r}")
        if not hidden:
            raise ValueError("hidden needs at least one size")
        self.d, self.hidden, self.activation, self.softmax = d, tuple(hidden), activation, softmax
        sizes = [4 * d, *self.hidden]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.acts = nn.ModuleList((Dice(h) if activation == "dice" else nn.PReLU(h)) for h in self.hidden)
        self.score = nn.Linear(sizes[-1], 1)
        self.reset_parameters()

    def reset_parameters(self):
        for m in (*self.linears, *self.acts, self.score):
            m.reset_parameters()

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor, return_weights: bool = False):
        B, L, d = keys.shape
        mask = mask.bool()                                                        # [B, L]
        # First layer on [q, k, q - k, q*k] without building that [B, L, 4d] input: with
        # W = [W_q | W_k | W_d | W_p], W [q; k; q-k; q*k] = (W_q + W_d) q + (W_k - W_d) k + W_p (q*k),
        # so the query part is computed once per row and the key part is a 2d-wide product
        # (the same function and parameters, half the multiply-adds).
        first = self.linears[0]
        W_q, W_k, W_d, W_p = first.weight.split(d, dim=1)                         # 4 x [h, d]
        query_part = F.linear(query, W_q + W_d, first.bias)                       # [B, h]
        key_input = torch.cat([keys, query.unsqueeze(1) * keys], dim=-1)          # [B, L, 2d]
        key_part = F.linear(key_input, torch.cat([W_k - W_d, W_p], dim=1))        # [B, L, h]
        z = (key_part + query_part.unsqueeze(1)).reshape(B * L, -1)               # [B*L, h]
        row_mask = mask.reshape(B * L)                                            # [B*L]
        for i, act in enumerate(self.acts):
            if i > 0:
                z = self.linears[i](z)                                            # [B*L, h_i]
            z = act(z, row_mask) if isinstance(act, Dice) else act(z)             # [B*L, h_i]
        scores = self.score(z).view(B, L)                                         # [B, L]
        if self.softmax:
            # finfo.min rather than -inf: an all-padding row becomes a finite uniform row that the
            # mask then zeroes (softmax of all -inf is NaN); real rows are exact (exp underflows to 0).
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1) * mask                        # [B, L]
        else:
            weights = scores.masked_fill(~mask, 0.0)                              # [B, L]
        out = torch.einsum("bl,bld->bd", weights, keys)                           # [B, d]
        return (out, weights) if return_weights else out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.d}, hidden={self.hidden}, "
                f"activation={self.activation!r}, softmax={self.softmax})")


__all__ = ["TargetAttention", "Dice"]

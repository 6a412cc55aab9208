r"""Multi-task heads: MMoE and the shared-bottom baseline.

:class:`MMoE` is the Multi-gate Mixture-of-Experts of `"Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts" <https://dl.acm.org/doi/10.1145/3219819.3220007>`_
(Ma et al. KDD 2018): :math:`E` expert MLPs shared by all tasks, and one softmax gate per task
that mixes them, so related tasks can share experts and unrelated ones can drift apart:

.. math::
    \mathbf{f}^{k}(\mathbf{x}) = \sum_{e=1}^{E} g^{k}_{e}(\mathbf{x})\, \mathbf{f}_e(\mathbf{x}),
    \qquad g^{k}(\mathbf{x}) = \text{softmax}(W_{g^k} \mathbf{x} + \mathbf{b}_{g^k})

:class:`SharedBottom` is the classic baseline the paper compares against: one MLP whose output
every task tower reads (an MMoE with one expert and gates fixed at 1).

Both return one ``[B, out_dim]`` tensor per task for the task towers: ``x [B, D]`` → list of
``n_tasks`` x ``[B, out_dim]``; with ``return_gates=True`` also ``gates [B, n_tasks, E]``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(in_dim: int, hidden: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` for every size in ``hidden`` (ReLU after the last too)."""
    layers, prev = [], in_dim
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = h
    return nn.Sequential(*layers)


def _reset(module: nn.Module):
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


class MMoE(nn.Module):
    r"""Multi-gate Mixture-of-Experts (Ma et al. KDD 2018; module docstring).

    Args:
        in_dim (int): input size :math:`D`.
        n_tasks (int): number of gates / outputs.
        n_experts (int): expert MLPs :math:`E`.
        expert_hidden (tuple): hidden sizes of each expert (ReLU); ``out_dim = expert_hidden[-1]``.
        dropout (float): dropout after each expert layer.
    """

    def __init__(self, in_dim: int, n_tasks: int, n_experts: int = 4, expert_hidden: Sequence[int] = (64,),
                 dropout: float = 0.0):
        super().__init__()
        if not expert_hidden:
            raise ValueError("expert_hidden needs at least one size")
        self.in_dim, self.n_tasks, self.n_experts = in_dim, n_tasks, n_experts
        self.expert_hidden, self.dropout = tuple(expert_hidden), dropout
        self.out_dim = self.expert_hidden[-1]
        self.experts = nn.ModuleList(mlp(in_dim, self.expert_hidden, dropout) for _ in range(n_experts))
        self.gates = nn.ModuleList(nn.Linear(in_dim, n_experts) for _ in range(n_tasks))
        self.reset_parameters()

    def reset_parameters(self):
        _reset(self)

    def forward(self, x: Tensor, return_gates: bool = False):
        B, E, K = x.shape[0], self.n_experts, self.n_tasks
        # The experts' first layers and all gates read the same x: one fused matmul
        # [B, D] @ [D, E*h1 + K*E] instead of E + K small ones (~2x faster at serving sizes;
        # the parameters stay per expert / per gate, so checkpoints are unchanged).
        firsts = [f[0] for f in self.experts]
        weight = torch.cat([m.weight for m in firsts] + [g.weight for g in self.gates])     # [E*h1 + K*E, D]
        bias = torch.cat([m.bias for m in firsts] + [g.bias for g in self.gates])           # [E*h1 + K*E]
        fused = F.linear(x, weight, bias)                                               # [B, E*h1 + K*E]
        h1 = firsts[0].out_features
        hidden = fused[:, :E * h1].reshape(B, E, h1)                                    # [B, E, h1]
        if len(self.expert_hidden) == 1:      # the rest of each expert is ReLU (+ Dropout): all at once
            experts = self.experts[0][1:](hidden)                                       # [B, E, h]
        else:
            experts = torch.stack([f[1:](hidden[:, e]) for e, f in enumerate(self.experts)], dim=1)  # [B, E, h]
        gates = torch.softmax(fused[:, E * h1:].reshape(B, K, E), dim=-1)               # [B, K, E]
        mixed = torch.bmm(gates, experts)                                               # [B, K, h]
        outputs = list(mixed.unbind(dim=1))                                             # K x [B, h]
        return (outputs, gates) if return_gates else outputs

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_dim}, {self.out_dim}, tasks={self.n_tasks}, "
                f"experts={self.n_experts}, expert_hidden={self.expert_hidden})")


class SharedBottom(nn.Module):
    r"""Shared-bottom multi-task baseline: one ReLU MLP, its output given to every task.

    Args:
        in_dim (int): input size.
        n_tasks (int): number of (identical) outputs.
        hidden (tuple): MLP sizes; ``out_dim = hidden[-1]``.
        dropout (float): dropout after each layer.

    ``return_gates=True`` returns gates of ones ``[B, n_tasks, 1]`` (one expert, always chosen),
    so callers can treat both heads alike.
    """

    def __init__(self, in_dim: int, n_tasks: int, hidden: Sequence[int] = (64,), dropout: float = 0.0):
        super().__init__()
        if not hidden:
            raise ValueError("hidden needs at least one size")
        self.in_dim, self.n_tasks, self.hidden, self.dropout = in_dim, n_tasks, tuple(hidden), dropout
        self.out_dim = self.hidden[-1]
        self.bottom = mlp(in_dim, self.hidden, dropout)
        self.reset_parameters()

    def reset_parameters(self):
        _reset(self)

    def forward(self, x: Tensor, return_gates: bool = False):
        h = self.bottom(x)                                                             # [B, h]
        outputs = [h] * self.n_tasks                                                   # K x [B, h]
        if return_gates:
            return outputs, x.new_ones(x.shape[0], self.n_tasks, 1)                    # [B, K, 1]
        return outputs

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_dim}, {self.out_dim}, tasks={self.n_tasks}, hidden={self.hidden})"


__all__ = ["MMoE", "SharedBottom", "mlp"]

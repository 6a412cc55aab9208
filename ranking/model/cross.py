r"""Explicit feature crosses: DCN-V2's cross network with a mixture of low-rank experts
(`"DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank
Systems" <https://arxiv.org/abs/2008.13535>`_, Wang et al. WWW 2021, section 5.2 "CrossNetMix").

Each layer crosses the current representation with the input :math:`\mathbf{x}_0` through
:math:`E` low-rank experts (rank :math:`r \ll D`) mixed by a softmax gate on :math:`\mathbf{x}_l`:

.. math::
    \mathbf{x}_{l+1} = \sum_{e=1}^{E} g_e(\mathbf{x}_l)\; \mathbf{x}_0 \odot
        \Big(U_{l,e}\, \tanh\big(C_{l,e}\, \tanh(V_{l,e}^{\top} \mathbf{x}_l)\big) + \mathbf{b}_l\Big)
        + \mathbf{x}_l,
    \qquad g(\mathbf{x}_l) = \text{softmax}(G_l\, \mathbf{x}_l)

with :math:`U_{l,e}, V_{l,e} \in \mathbb{R}^{D \times r}`, :math:`C_{l,e} \in \mathbb{R}^{r \times r}`,
:math:`G_l \in \mathbb{R}^{E \times D}` (one bias-free gate row per expert) and one bias
:math:`\mathbf{b}_l` per layer, as in the authors' reference code. Since the gates sum to 1,
:math:`\mathbf{x}_0 \odot` factors out of the sum. Experts run batched (one einsum per step).

Shapes: ``x [B, D]`` → ``[B, D]``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class CrossNetMix(nn.Module):
    r"""DCN-V2 cross network, mixture of low-rank experts (module docstring).

    Args:
        in_dim (int): input size :math:`D` (the output has the same size).
        n_layers (int): cross layers.
        n_experts (int): low-rank experts per layer :math:`E`.
        rank (int): expert rank :math:`r`.
    """

    def __init__(self, in_dim: int, n_layers: int = 2, n_experts: int = 2, rank: int = 8):
        super().__init__()
        self.in_dim, self.n_layers, self.n_experts, self.rank = in_dim, n_layers, n_experts, rank
        self.V = nn.Parameter(torch.empty(n_layers, n_experts, in_dim, rank))    # x -> rank space
        self.C = nn.Parameter(torch.empty(n_layers, n_experts, rank, rank))      # in rank space
        self.U = nn.Parameter(torch.empty(n_layers, n_experts, in_dim, rank))    # rank space -> x
        self.bias = nn.Parameter(torch.empty(n_layers, in_dim))
        self.gates = nn.ModuleList(nn.Linear(in_dim, n_experts, bias=False) for _ in range(n_layers))
        self.reset_parameters()

    def reset_parameters(self):
        # Xavier-normal experts and zero bias, as the reference implementation.
        for W in (self.V, self.C, self.U):
            for l in range(self.n_layers):
                for e in range(self.n_experts):
                    nn.init.xavier_normal_(W.data[l, e])
        nn.init.zeros_(self.bias)
        for gate in self.gates:
            gate.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x0 = x                                                                        # [B, D]
        for l in range(self.n_layers):
            v = torch.tanh(torch.einsum("bd,edr->ber", x, self.V[l]))                # [B, E, r]
            v = torch.tanh(torch.einsum("ber,esr->bes", v, self.C[l]))               # [B, E, r]
            u = torch.einsum("bes,eds->bed", v, self.U[l]) + self.bias[l]            # [B, E, D]
            g = torch.softmax(self.gates[l](x), dim=-1)                              # [B, E]
            x = x0 * torch.einsum("be,bed->bd", g, u) + x                             # [B, D]
        return x

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_dim}, layers={self.n_layers}, "
                f"experts={self.n_experts}, rank={self.rank})")


__all__ = ["CrossNetMix"]

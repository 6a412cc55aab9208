r"""Position-bias tower ("Biasnet"), used in training only.

A shown stream is clicked more at the top of the list whatever its relevance. PAL (`"PAL: a
position-bias aware learning framework for CTR prediction in live recommender systems"
<https://dl.acm.org/doi/10.1145/3298689.3347033>`_, Guo et al. RecSys 2019) factors the click into
"seen" × "relevant" and learns the position part in a separate module that is dropped at serving
time; YouTube's multitask ranker (`"Recommending What Video to Watch Next"
<https://dl.acm.org/doi/10.1145/3298689.3346997>`_, Zhao et al. RecSys 2019) does it with a
*shallow tower* on position (and device) features whose logit is added to the main logit in
training and left out at serving. We follow the shallow-tower form:

.. math::
    b(k, p) = \mathbb{1}[k > 0]\; \mathbf{w}_2^{\top}\, \text{ReLU}\big(W_1 (\mathbf{P}_{k} + \mathbf{Q}_{p}) + \mathbf{b}_1\big) + b_2,
    \qquad \text{logit}_{\text{train}} = \text{logit}_{\text{ctr}} + b(k, p)

for the 1-based slot position :math:`k` (0 = unknown: the tower contributes 0) and the page
:math:`p` (0 = unknown: a zero row). Both tables have ``n_positions`` / ``n_pages`` rows
INCLUDING row 0, like every id table of the ranker; positions ``>= n_positions - 1`` share the
last row (deep slots are rare and alike). The output layer starts at zero, so an untrained tower
adds nothing.

Shapes: ``position [B] long``, ``page [B] long`` or ``None`` → ``[B]``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn


class BiasNet(nn.Module):
    r"""Shallow position(+page) tower (module docstring: PAL; YouTube's shallow tower).

    Args:
        n_positions (int): position table rows incl. row 0 (unknown); larger positions are
            clamped to the last row.
        n_pages (int): page table rows incl. row 0 (unknown); larger ids are clamped too.
        d (int): embedding size.
        hidden (int): hidden units of the tower.
    """

    def __init__(self, n_positions: int = 64, n_pages: int = 8, d: int = 8, hidden: int = 16):
        super().__init__()
        if n_positions < 2 or n_pages < 1:
            raise ValueError("need n_positions >= 2 and n_pages >= 1")
        self.n_positions, self.n_pages, self.d, self.hidden = n_positions, n_pages, d, hidden
        self.position_emb = nn.Embedding(n_positions, d, padding_idx=0)
        self.page_emb = nn.Embedding(n_pages, d, padding_idx=0)
        self.hidden_layer = nn.Linear(d, hidden)
        self.out = nn.Linear(hidden, 1)
        self.reset_parameters()

    def reset_parameters(self):
        self.position_emb.reset_parameters()       # N(0, 1), padding row zeroed
        self.page_emb.reset_parameters()
        self.hidden_layer.reset_parameters()
        nn.init.zeros_(self.out.weight)             # untrained: no position effect at all
        nn.init.zeros_(self.out.bias)

    def forward(self, position: Tensor, page: Optional[Tensor] = None) -> Tensor:
        known = position > 0                                                       # [B]
        pos = position.clamp(0, self.n_positions - 1)                              # [B]
        h = self.position_emb(pos)                                                 # [B, d]
        if page is not None:
            h = h + self.page_emb(page.clamp(0, self.n_pages - 1))                 # [B, d]
        logit = self.out(torch.relu(self.hidden_layer(h))).squeeze(-1)            # [B]
        return logit * known.to(logit.dtype)                                       # [B] 0 where unknown

    def position_logits(self, positions: Union[Tensor, Sequence[int]],
                        page: Optional[Union[Tensor, int]] = None) -> Tensor:
        """The tower's logit for each of ``positions [P]`` (on ``page``: an id, ``[P]`` ids or
        ``None``) → ``[P]``."""
        device = self.position_emb.weight.device
        positions = torch.as_tensor(positions, dtype=torch.long, device=device).reshape(-1)  # [P]
        if page is not None:
            page = torch.as_tensor(page, dtype=torch.long, device=device).expand(positions.shape)  # [P]
        return self.forward(positions, page)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(positions={self.n_positions}, pages={self.n_pages}, "
                f"d={self.d}, hidden={self.hidden})")


__all__ = ["BiasNet"]

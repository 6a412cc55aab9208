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
last row (deep slots are rare and alike). The output layer starts at zero, so an untrained
``"mlp"`` tower adds nothing.

``shape="monotone"`` (the default) builds the examination prior of click models (a lower slot is
seen no more often than a higher one — the cascade and position-based models) into the tower:

.. math::
    b(k, p) = c + o_p - \sum_{j=2}^{k} \text{softplus}(\delta_j)

with one learned decrement :math:`\delta_j` per slot, a page offset :math:`o_p` (0 for page 0)
and a level :math:`c`. Each slot's logit then borrows strength from its neighbours' ordering
instead of being a free estimate: on the simulator's 7-day world with the per-slot MLP the
learned curve zig-zagged (slot 4 above slot 3) by more than the error bar. The decrements start at
:math:`\text{softplus}(-3) \approx 0.05`, a nearly flat curve.

``form="multiplicative"`` is PAL's own factorisation, :math:`P(\text{click}) = P(\text{seen}\mid k, p)
\cdot P(\text{click}\mid\text{seen})`: the tower then returns the log examination probability
:math:`\log \sigma(b(k, p)) \le 0` (0 for an unknown position: "seen"; the level / output bias
starts at ``EXAM_INIT_LOGIT`` = 4, examination σ(4) ≈ 0.98), and the ranker multiplies instead of
adding logits (:func:`~ranking.model.ranker.biased_click_logit`). Its curve is exactly
:math:`\sigma(b_k) / \sigma(b_1)` whatever the relevance, where the additive form's curve depends
on how likely clicks are. The additive form is the default: it learned the planted multiplicative
curve better on a development world (bench/quality.py ``full_pal``).

``shape="table"`` holds a fixed table :math:`b(k, p) = T_{p,k}` with no parameters, filled before
training with the examination curve estimated by intervention harvesting
(:mod:`ranking.position_bias`: the same user–stream pair shown at different slots). Trained jointly,
a learnable tower also absorbs the part of the logging policy's ordering that the relevance towers
have not learned (the policy knows more than the features), and its curve comes out too steep; a
fixed harvested curve cannot absorb anything, and the relevance towers learn against it. In the
multiplicative form the table is :math:`\log P(\text{seen})` as is (no sigmoid). An option, not
the ranker's default (additive, monotone); use it with ``form="multiplicative"``, the form the
harvest estimates.

Shapes: ``position [B] long``, ``page [B] long`` or ``None`` → ``[B]``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BiasNet(nn.Module):
    r"""Shallow position(+page) tower (module docstring: PAL; YouTube's shallow tower).

    Args:
        n_positions (int): position table rows incl. row 0 (unknown); larger positions are
            clamped to the last row.
        n_pages (int): page table rows incl. row 0 (unknown); larger ids are clamped too.
        d (int): embedding size.
        hidden (int): hidden units of the tower.
        form (str): ``"additive"`` (a logit added to the CTR logit) or ``"multiplicative"``
            (the log examination probability; PAL).
        shape (str): ``"monotone"`` (non-increasing in the position), ``"mlp"`` (a free
            embedding per slot through a ReLU layer; ``d`` and ``hidden`` size it) or
            ``"table"`` (a fixed ``[n_pages, n_positions]`` table set by :meth:`set_table`, no
            parameters: the curve harvested from the log, see below).
    """
    FORMS = ("additive", "multiplicative")
    SHAPES = ("monotone", "mlp", "table")
    EXAM_INIT_LOGIT = 4.0
    DECREMENT_INIT = -3.0

    def __init__(self, n_positions: int = 64, n_pages: int = 8, d: int = 8, hidden: int = 16,
                 form: str = "additive", shape: str = "monotone"):
        super().__init__()
        if n_positions < 2 or n_pages < 1:
            raise ValueError("need n_positions >= 2 and n_pages >= 1")
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {form!r}")
        if shape not in self.SHAPES:
            raise ValueError(f"shape must be one of {self.SHAPES}, got {shape!r}")
        self.n_positions, self.n_pages, self.d, self.hidden = n_positions, n_pages, d, hidden
        self.form, self.shape = form, shape
        if shape == "mlp":
            self.position_emb = nn.Embedding(n_positions, d, padding_idx=0)
            self.page_emb = nn.Embedding(n_pages, d, padding_idx=0)
            self.hidden_layer = nn.Linear(d, hidden)
            self.out = nn.Linear(hidden, 1)
        elif shape == "table":
            # a fixed log-examination table, filled by set_table (ranking.position_bias); no parameters
            self.register_buffer("log_exam", torch.zeros(n_pages, n_positions))
        else:
            self.level = nn.Parameter(torch.zeros(()))
            self.decrement = nn.Parameter(torch.zeros(n_positions))    # [n_positions], rows 0 and 1 unused
            self.page_offset = nn.Embedding(n_pages, 1, padding_idx=0)
        self.reset_parameters()

    def reset_parameters(self):
        start = self.EXAM_INIT_LOGIT if self.form == "multiplicative" else 0.0   # "seen" / no effect
        if self.shape == "mlp":
            self.position_emb.reset_parameters()       # N(0, 1), padding row zeroed
            self.page_emb.reset_parameters()
            self.hidden_layer.reset_parameters()
            nn.init.zeros_(self.out.weight)             # untrained: no position effect at all
            nn.init.constant_(self.out.bias, start)
        elif self.shape == "table":
            self.log_exam.zero_()                       # empty table: no position effect
        else:
            nn.init.constant_(self.level, start)
            nn.init.constant_(self.decrement, self.DECREMENT_INIT)
            nn.init.zeros_(self.page_offset.weight)

    def _raw(self, pos: Tensor, page: Optional[Tensor]) -> Tensor:
        """The tower's score before the form's transform: ``pos [B]`` (clamped) → ``[B]``."""
        if self.shape == "table":
            row = page.clamp(0, self.n_pages - 1) if page is not None else torch.zeros_like(pos)
            return self.log_exam[row, pos]                                             # [B]
        if self.shape == "mlp":
            h = self.position_emb(pos)                                                 # [B, d]
            if page is not None:
                h = h + self.page_emb(page.clamp(0, self.n_pages - 1))                 # [B, d]
            return self.out(torch.relu(self.hidden_layer(h))).squeeze(-1)              # [B]
        step = F.softplus(self.decrement)                                              # [n_positions] >= 0
        step = torch.cat([step.new_zeros(2), step[2:]])                                # slots 0, 1: no step
        drop = torch.cumsum(step, 0)                                                   # [n_positions] non-decreasing
        raw = self.level - drop[pos]                                                   # [B]
        if page is not None:
            raw = raw + self.page_offset(page.clamp(0, self.n_pages - 1)).squeeze(-1)  # [B]
        return raw

    def forward(self, position: Tensor, page: Optional[Tensor] = None) -> Tensor:
        known = position > 0                                                       # [B]
        pos = position.clamp(0, self.n_positions - 1)                              # [B]
        logit = self._raw(pos, page)                                               # [B]
        if self.form == "multiplicative" and self.shape != "table":
            logit = F.logsigmoid(logit)                                            # [B] log P(seen) <= 0
        return logit * known.to(logit.dtype)                                       # [B] 0 where unknown

    @torch.no_grad()
    def set_table(self, log_exam) -> "BiasNet":
        """Fill the ``"table"`` shape with ``log_exam [n_pages, n_positions]`` (e.g.
        :func:`ranking.position_bias.harvest_examination`); in the multiplicative form the values
        are log P(seen) and must be <= 0."""
        if self.shape != "table":
            raise ValueError(f"set_table needs shape='table', this tower is {self.shape!r}")
        t = torch.as_tensor(log_exam, dtype=self.log_exam.dtype)
        if tuple(t.shape) != tuple(self.log_exam.shape):
            raise ValueError(f"log_exam must be {tuple(self.log_exam.shape)}, got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("log_exam has non-finite values")
        if self.form == "multiplicative" and bool((t > 1e-6).any()):
            raise ValueError("a multiplicative table holds log probabilities: values must be <= 0")
        self.log_exam.copy_(t)
        return self

    def position_logits(self, positions: Union[Tensor, Sequence[int]],
                        page: Optional[Union[Tensor, int]] = None) -> Tensor:
        """The tower's logit for each of ``positions [P]`` (on ``page``: an id, ``[P]`` ids or
        ``None``) → ``[P]``."""
        device = next(iter(self.state_dict().values())).device
        positions = torch.as_tensor(positions, dtype=torch.long, device=device).reshape(-1)  # [P]
        if page is not None:
            page = torch.as_tensor(page, dtype=torch.long, device=device).expand(positions.shape)  # [P]
        return self.forward(positions, page)

    def __repr__(self) -> str:
        size = f"d={self.d}, hidden={self.hidden}, " if self.shape == "mlp" else ""
        return (f"{self.__class__.__name__}(positions={self.n_positions}, pages={self.n_pages}, "
                f"{size}form={self.form}, shape={self.shape})")


__all__ = ["BiasNet"]

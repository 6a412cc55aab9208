r"""The examination curve read off the log by intervention harvesting (no relevance model).

A ranker trained jointly with a position tower lets the tower absorb every difference between the
top and the bottom of the logged lists that the relevance towers have not learned yet. The logging
policy puts what IT believes relevant on top, and it knows things the model does not (on the
simulator: each user's true taste), so the tower's curve comes out too steep: on a development
world (simulator seed 3, 7 days) the jointly learned curve was off by 0.044 while an estimator
that knows every impression's true relevance is off by 0.017 (README, "The transformer ranker").

Intervention harvesting (`"Estimating Position Bias without Intrusive Interventions"
<https://arxiv.org/abs/1812.05161>`_, Agarwal et al. WSDM 2019) uses the same user–stream pair
shown at different slots in different requests: the pair's relevance is (nearly) the same each
time, the slot differs because the policy's scores and the competing live streams differ. With
the multiplicative click model :math:`E[y_i] = e(k_i, p_i)\, r_g` for impression :math:`i` of pair
:math:`g` at slot :math:`k_i` on page :math:`p_i`, conditioning on the pair's total clicks
:math:`C_g` removes :math:`r_g` (the Poisson fixed-effects / conditional likelihood, consistent
when only the mean is right — Wooldridge 1999, so Bernoulli clicks are fine):

.. math::
    \ell(\theta) = \sum_g \Big[\sum_{i \in g} y_i \log e_\theta(k_i, p_i)
                   - C_g \log \sum_{i \in g} e_\theta(k_i, p_i)\Big]

Only pairs with a click and at least two distinct (slot, page) cells carry information. The
curve is monotone like the learned tower (a lower slot is seen no more often):
:math:`\log e(k, p) = o_p - \sum_{j=2}^{k} \text{softplus}(\delta_j)`, normalised so that the best
page's slot 1 is 1. Positions beyond the deepest slot with data share its value.

What it needs: repeated exposures of pairs at varying slots (a noisy or changing policy, or
exploration traffic). What it assumes: a pair's relevance does not change WITH its slot — true
when the policy's ordering noise is independent of the time-varying part of relevance.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

MIN_INFORMATIVE_CLICKS = 200      # below this the curve is too noisy to fix a tower with


@dataclass
class HarvestedCurve:
    """``log_exam [n_pages, n_positions]`` (row/column 0 = unknown page/slot: 0) and what it was
    estimated from."""
    log_exam: np.ndarray
    rows: int                 # impressions in informative pairs
    pairs: int                # informative pairs (a click and >= 2 distinct cells)
    clicks: int
    max_position: int         # deepest slot with data; deeper slots share its value

    def curve(self, page: int = 0) -> np.ndarray:
        """e(k) / e(1) for k = 1..max_position on ``page`` (0 = the default row)."""
        row = self.log_exam[page]
        return np.exp(row[1:self.max_position + 1] - row[1])

    def as_dict(self) -> dict:
        return {"rows": self.rows, "pairs": self.pairs, "clicks": self.clicks,
                "max_position": self.max_position,
                "curve": [round(float(v), 4) for v in self.curve(self.reference_page)]}

    @property
    def reference_page(self) -> int:
        """The page whose slot 1 is the curve's reference (its log_exam is 0 there)."""
        return int(np.argmax(self.log_exam[:, 1]))


def harvest_examination(position, click, pair, page=None, *, n_positions: int = 64, n_pages: int = 8,
                        min_clicks: int = MIN_INFORMATIVE_CLICKS, max_iter: int = 500) -> Optional[HarvestedCurve]:
    """Estimate the examination curve from impressions (arrays of one length): ``position``
    (1-based, ≤ 0 = unknown: dropped), ``click`` (0/1), ``pair`` (the group key, e.g. a user–stream
    id; any hashable values), ``page`` (page index, 0 = unknown; None: all 0). Pages never seen
    (and page 0 when unseen) get the reference curve without a page offset. Table sizes match
    :class:`~ranking.model.biasnet.BiasNet` (rows incl. 0; larger ids are clamped like there).
    Returns None when the informative pairs hold fewer than ``min_clicks`` clicks."""
    import pandas as pd
    import torch
    import torch.nn.functional as F

    pos = np.asarray(pd.to_numeric(pd.Series(np.asarray(position)), errors="coerce").fillna(0), dtype=np.int64)
    y = np.asarray(click, dtype=np.float64)
    pg = np.zeros(len(pos), np.int64) if page is None else np.asarray(page, dtype=np.int64)
    if not (len(pos) == len(y) == len(pg) == len(pair)):
        raise ValueError("position, click, pair and page must have one length")
    pos = np.minimum(pos, n_positions - 1)
    pg = np.clip(pg, 0, n_pages - 1)
    keep = pos > 0
    df = pd.DataFrame({"g": pd.factorize(pd.Series(list(pair)))[0], "pos": pos, "pg": pg, "y": y})[keep]
    df["cell"] = df["pos"] * n_pages + df["pg"]
    st = df.groupby("g").agg(c=("y", "sum"), cells=("cell", "nunique"))
    good = st.index[(st["c"] > 0) & (st["cells"] > 1)]
    d = df[df["g"].isin(good)]
    clicks = int(d["y"].sum())
    if clicks < min_clicks:
        log.info("harvesting the position curve: %d clicks in informative pairs (< %d)", clicks, min_clicks)
        return None
    max_pos = int(d["pos"].max())
    g = torch.from_numpy(pd.factorize(d["g"])[0].astype(np.int64))                      # [M]
    k = torch.from_numpy(d["pos"].to_numpy())                                           # [M] 1..max_pos
    p = torch.from_numpy(d["pg"].to_numpy())                                            # [M]
    yt = torch.from_numpy(d["y"].to_numpy())                                            # [M]
    n_groups = int(g.max()) + 1
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, yt)            # [G] C_g
    decrement = torch.full((n_positions,), -3.0, dtype=torch.float64, requires_grad=True)
    offset = torch.zeros(n_pages, dtype=torch.float64, requires_grad=True)

    def log_e():                                                                        # [n_pages, n_positions]
        step = torch.cat([decrement.new_zeros(2), F.softplus(decrement[2:])])
        return offset[:, None] - torch.cumsum(step, 0)[None, :]

    opt = torch.optim.LBFGS([decrement, offset], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        le = log_e()[p, k]                                                              # [M]
        denom = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, torch.exp(le))  # [G]
        loss = -((yt * le).sum() - (total * torch.log(denom)).sum()) / total.sum()
        loss = loss + 1e-6 * offset.pow(2).sum()      # pages never seen: pinned at 0 (else free)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        table = log_e()
        table[:, max_pos + 1:] = table[:, max_pos:max_pos + 1]                          # deeper: as the deepest seen
        table = table - table[:, 1].max()                                               # best slot 1 = 1: all <= 0
        table[:, 0] = 0.0                                                               # unknown slot: no effect
    out = table.numpy().astype(np.float32)
    return HarvestedCurve(out, rows=int(len(d)), pairs=int(len(good)), clicks=clicks, max_position=max_pos)


def harvest_from_frame(frame, pages: Optional[list] = None, **kw) -> Optional[HarvestedCurve]:
    """:func:`harvest_examination` on a training frame (``user_id``, ``stream_id``, ``position``,
    ``click`` and optionally ``page``): pairs are user–stream; ``pages`` is the inputs' page list
    (page index = its position + 1, unknown pages 0), as :class:`~ranking.dataset.RankerInputs`
    numbers them."""
    if "position" not in frame or len(frame) == 0:
        return None
    pair = list(zip(frame["user_id"].to_numpy(), frame["stream_id"].to_numpy()))
    page = None
    if pages and "page" in frame:
        lut = {str(p): i + 1 for i, p in enumerate(pages)}
        page = np.asarray([lut.get(str(v), 0) for v in frame["page"]], dtype=np.int64)
    return harvest_examination(frame["position"].to_numpy(), frame["click"].to_numpy(), pair, page, **kw)


def curve_table(examination, *, n_positions: int = 64, n_pages: int = 8) -> HarvestedCurve:
    """A fixed curve given by slot (``examination[k-1]`` for slot k, relative to slot 1: e.g.
    ``streamrank position-curve``'s estimate from randomised traffic) as a ``"table"`` Biasnet's
    ``log_exam [n_pages, n_positions]``: the same curve on every page, slots past the curve's
    end take its last value, a missing (NaN) slot its upper neighbour's, and the curve is made
    non-increasing and <= 1 (log <= 0) as an examination curve is."""
    e = np.asarray(examination, dtype=float).copy()
    if e.ndim != 1 or len(e) == 0:
        raise ValueError("the position curve must be a non-empty list of examination values by slot")
    if not np.isfinite(e[0]) or e[0] <= 0:
        raise ValueError(f"the curve's slot 1 must be a positive number, got {e[0]}")
    e = e / e[0]
    for k in range(1, len(e)):
        if not np.isfinite(e[k]) or e[k] <= 0:
            e[k] = e[k - 1]
    e = np.minimum.accumulate(np.minimum(e, 1.0))
    cols = np.empty(n_positions)
    cols[0] = 0.0                                                  # unknown slot: no effect
    k = np.arange(1, n_positions)
    cols[1:] = np.log(e[np.minimum(k, len(e)) - 1])
    table = np.broadcast_to(cols, (n_pages, n_positions)).astype(np.float32).copy()
    return HarvestedCurve(table, rows=0, pairs=0, clicks=0, max_position=min(len(e), n_positions - 1))


def slot_ips_weights(position, click, examination, max_weight: float = 10.0) -> np.ndarray:
    """Per-row training weights of slot IPS: 1 / examination(slot) for a clicked row (clipped at
    ``max_weight``), 1 for the rest and for rows of unknown slot (0). ``examination``: by slot,
    relative to slot 1 (normalised, made non-increasing, the last value past its end, as
    :func:`curve_table`). A click at a rarely examined slot stands for the clicks the slot hid."""
    table = curve_table(examination, n_positions=int(max(np.max(position, initial=0), 1)) + 1, n_pages=1)
    exam = np.exp(table.log_exam[0])                                 # [P + 1], index 0 = unknown -> 1
    pos = np.asarray(position, dtype=np.int64)
    w = np.where(np.asarray(click) > 0, 1.0 / exam[np.clip(pos, 0, len(exam) - 1)], 1.0)
    w[pos <= 0] = 1.0
    return np.minimum(w, max_weight).astype(np.float32)


__all__ = ["HarvestedCurve", "harvest_examination", "harvest_from_frame", "curve_table", "slot_ips_weights",
           "MIN_INFORMATIVE_CLICKS"]

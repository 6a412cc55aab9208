"""Page re-ranking: beam search over the top of the page under diversity constraints.

The ranker scores each candidate alone; a page is read top to bottom, and what a stream is worth
at a slot depends on what is above it (seed 003's page-level re-ranking: a second stream of the
same category right below the first is worth less). The re-ranker builds the first ``top`` slots
one at a time. A *slot value* function gives, for every partial page in the beam and every
candidate, the expected clicks of that candidate at the next slot given the streams above
(:class:`policy.slate_model.SlateModel`, or :class:`ScoreValue` — the ranker's click probability
times a fixed examination curve — when no slate model is trained). Beam search keeps the ``width``
partial pages with the highest summed value (W = 1 is greedy), subject to:

* at most ``max_per_category`` streams of one category in the top ``top`` slots;
* no two streams of one category in adjacent slots (``no_adjacent``).

Streams of an unknown category (None / negative code) are exempt. When no candidate can extend any
partial page within the constraints (too few categories among the candidates), the slot takes the
best candidate regardless and the page is flagged ``relaxed``. Slots before ``start_slot`` keep
the ranker's order (a start-slot option: e.g. keep slot 1 as ranked); slots after ``top`` take the
remaining candidates in the ranker's order. The search looks at the ranker's best ``pool``
candidates only, so its cost is flat in the number of candidates: O(top · width · pool).

The result is deterministic given the scores: every slot's propensity is 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np


@dataclass(frozen=True)
class RerankConfig:
    width: int = 3                  # beam width W (1 = greedy; 0 = re-ranking off)
    top: int = 10                   # the slots re-ranked and constrained (K)
    max_per_category: int = 3       # m: at most m streams of one category in the top K (0 = no limit)
    no_adjacent: bool = True        # no two streams of one category in adjacent slots
    start_slot: int = 0             # 0-based: slots before it keep the ranker's order
    pool: int = 50                  # the ranker's best candidates the search considers

    def __post_init__(self):
        if self.width < 0 or self.top < 1 or self.max_per_category < 0 or self.pool < 1:
            raise ValueError("rerank width >= 0, top >= 1, max_per_category >= 0 and pool >= 1 are required")
        if not 0 <= self.start_slot < self.top:
            raise ValueError(f"rerank start_slot must be in [0, top), got {self.start_slot}")

    @property
    def enabled(self) -> bool:
        return self.width > 0


class SlotValue(Protocol):
    """The expected clicks of each candidate at the next slot, given the partial pages."""

    def start(self, cand: np.ndarray, cats: np.ndarray, scores: np.ndarray):
        """The state of the empty page (one beam) for these candidates (``cand`` indexes them)."""

    def values(self, state, slot: int) -> np.ndarray:
        """[B, n] value of placing each candidate at ``slot`` (0-based) in each of B partial pages."""

    def advance(self, state, parents: np.ndarray, chosen: np.ndarray, slot: int):
        """The state after appending candidate ``chosen[b]`` to partial page ``parents[b]``."""


class ScoreValue:
    """Model-free slot value: σ(score) · examination(slot), examination(p) = (p+1)^-power.

    With no interactions between slots, the constrained beam maximises the examination-weighted
    click probability of the page: the ranker's order wherever the constraints allow it."""

    def __init__(self, power: float = 0.7, logits: bool = True):
        self.power = power
        self.logits = logits

    def start(self, cand, cats, scores):
        s = np.asarray(scores, dtype=float)
        p = 1.0 / (1.0 + np.exp(-np.clip(s, -30, 30))) if self.logits else s
        return {"p": np.nan_to_num(p, nan=0.0, neginf=0.0)[None, :]}

    def values(self, state, slot):
        return state["p"] * (slot + 1.0) ** -self.power

    def advance(self, state, parents, chosen, slot):
        return {"p": state["p"][np.zeros(len(parents), np.int64)]}


def category_codes(categories) -> np.ndarray:
    """int64 codes; None / NaN / negative -> -1 (exempt from the constraints)."""
    import pandas as pd
    # vectorised (the request path passes up to 1,000 candidates): non-numbers -> NaN -> -1
    v = pd.to_numeric(pd.Series(list(categories), dtype=object), errors="coerce").to_numpy(dtype=float)
    out = np.where(np.isfinite(v) & (v >= 0), np.trunc(np.nan_to_num(v, nan=-1.0)), -1).astype(np.int64)
    return out


@dataclass
class Reranked:
    order: np.ndarray        # candidate indices, slot by slot (the whole page)
    relaxed: bool            # some slot could not meet the constraints
    value: float             # the slot values' sum over the re-ranked slots (the search's objective)


def rerank(scores: np.ndarray, categories, k: int, cfg: RerankConfig,
           value: Optional[SlotValue] = None) -> Reranked:
    """The page of ``k`` candidates (indices into ``scores``), re-ranked by beam search."""
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    order = np.argsort(-scores, kind="stable")
    size = min(k, len(order))
    cats_all = category_codes(categories)
    top = min(cfg.top, size)
    if not cfg.enabled or top < 2 or cfg.start_slot >= top:
        return Reranked(order[:size], False, 0.0)
    value = value or ScoreValue()
    fixed = order[:cfg.start_slot]
    pool = order[cfg.start_slot:cfg.start_slot + max(cfg.pool, top)]
    cand = pool
    cats = cats_all[cand]
    n = len(cand)
    # the fixed slots' categories count toward the constraints
    fixed_cats = cats_all[fixed]
    ncat = int(max(cats_all.max(initial=-1), 0)) + 1
    counts0 = np.zeros(ncat, np.int64)
    for c in fixed_cats:
        if c >= 0:
            counts0[c] += 1
    last0 = int(fixed_cats[-1]) if len(fixed_cats) else -1

    state = value.start(cand, cats, scores[cand])
    if len(fixed):            # the slate model sees the fixed slots as the page above
        for j, f in enumerate(fixed):
            state = _advance_fixed(value, state, f, scores, cats_all, j)
    beams_used = np.zeros((1, n), bool)
    beams_counts = counts0[None, :].copy()
    beams_last = np.array([last0])
    beams_total = np.zeros(1)
    beams_seq = np.zeros((1, 0), np.int64)
    relaxed = False
    limit = cfg.max_per_category if cfg.max_per_category > 0 else np.iinfo(np.int64).max
    known = cats >= 0
    for slot in range(cfg.start_slot, top):
        v = np.asarray(value.values(state, slot), dtype=float)          # [B, n]
        allowed = ~beams_used
        ok = allowed.copy()
        if known.any():
            cat_ix = np.where(known, cats, 0)
            full = beams_counts[:, cat_ix] >= limit                   # [B, n]
            ok &= ~(full & known[None, :])
            if cfg.no_adjacent:
                ok &= ~((cats[None, :] == beams_last[:, None]) & known[None, :])
            # look ahead: keep only the candidates after which the rest of the top can still be
            # filled within the rules (else the beam can paint itself into a corner)
            fill = ok & _completable(beams_used, beams_counts, cats, known, limit, top - slot - 1, cfg.no_adjacent)
            if fill.any():
                ok = fill
        if not ok.any():
            ok = allowed
            relaxed = True
        total = np.where(ok, beams_total[:, None] + v, -np.inf)
        flat = total.ravel()
        w = min(max(cfg.width, 1), int(np.isfinite(flat).sum()))
        # the W best (partial page, candidate) pairs; ties by beam then by ranker order (stable)
        best = np.argsort(-flat, kind="stable")[:w]
        parents, chosen = np.divmod(best, n)
        beams_total = flat[best]
        beams_used = beams_used[parents].copy()
        beams_used[np.arange(w), chosen] = True
        beams_counts = beams_counts[parents].copy()
        kc = cats[chosen]
        for b in range(w):
            if kc[b] >= 0:
                beams_counts[b, kc[b]] += 1
        beams_last = np.where(kc >= 0, kc, -1)
        beams_seq = np.concatenate([beams_seq[parents], chosen[:, None]], axis=1)
        state = value.advance(state, parents, chosen, slot)
    seq = cand[beams_seq[0]]
    free = np.ones(len(scores), bool)                     # the rest of the page: the ranker's order
    free[fixed] = False
    free[seq] = False
    rest = order[free[order]][:size - len(fixed) - len(seq)]
    page = np.concatenate([fixed, seq, rest]).astype(np.int64)
    return Reranked(page, relaxed, float(beams_total[0]))


def _completable(used, counts, cats, known, limit, r, no_adjacent) -> np.ndarray:
    """[B, n]: after placing candidate j on partial page b, can the next ``r`` slots be filled?

    With x_i streams of known category i and u exempt ones, a sequence of r with no two of one
    category adjacent, not starting with the category L just placed, exists iff x_i ≤ ⌈r/2⌉ and
    x_L ≤ ⌊r/2⌋; the x_i can be chosen up to a_i = min(unused of i, cap left for i). So it is
    possible iff Σ_i min(a_i, bound_i) + u ≥ r."""
    B, n = used.shape
    if r <= 0:
        return np.ones((B, n), bool)
    ncat = counts.shape[1]
    onehot = np.zeros((n, ncat), np.int64)
    onehot[np.flatnonzero(known), cats[known]] = 1
    free = ~used
    avail = free.astype(np.int64) @ onehot                             # [B, C] unused per category
    u = (free & ~known[None, :]).sum(1)                                 # [B] unused exempt streams
    room = np.maximum(limit - counts, 0)                                # [B, C] cap left
    a = np.minimum(avail, room)
    b_other = -(-r // 2) if no_adjacent else r
    b_last = r // 2 if no_adjacent else r
    base = np.minimum(a, b_other).sum(1)                                # [B]
    # placing one of category c: its a drops by one and its bound becomes b_last
    cap_c = base[:, None] - np.minimum(a, b_other) + np.minimum(np.maximum(a - 1, 0), b_last) + u[:, None]
    cap_known = np.take_along_axis(cap_c, np.broadcast_to(np.where(known, cats, 0)[None, :], (B, n)), axis=1)
    cap = np.where(known[None, :], cap_known, (base + u - 1)[:, None])
    return cap >= r


def _advance_fixed(value, state, f, scores, cats_all, slot):
    """Feed a fixed (ranker-ordered) slot to a value model that tracks the page above."""
    feed = getattr(value, "feed", None)
    return feed(state, float(scores[f]), int(cats_all[f]), slot) if feed is not None else state


def violations(categories_by_slot, cfg: RerankConfig, exempt=None) -> list[str]:
    """What breaks the constraints in a served page's top ``cfg.top`` slots (empty: none).
    ``exempt[i]``: slot i is not held to them (an exploration or randomised slot)."""
    cats = category_codes(categories_by_slot)[:cfg.top]
    ex = np.zeros(len(cats), bool) if exempt is None else np.asarray(exempt, bool)[:cfg.top]
    out = []
    if cfg.max_per_category > 0:
        kept = cats[(cats >= 0) & ~ex]
        vals, counts = np.unique(kept, return_counts=True)
        out += [f"category {v}: {c} streams in the top {cfg.top} (max {cfg.max_per_category})"
                for v, c in zip(vals, counts) if c > cfg.max_per_category]
    if cfg.no_adjacent:
        for i in range(1, len(cats)):
            if cats[i] >= 0 and cats[i] == cats[i - 1] and not (ex[i] or ex[i - 1]):
                out.append(f"slots {i} and {i + 1}: both category {cats[i]}")
    return out


__all__ = ["RerankConfig", "ScoreValue", "SlotValue", "Reranked", "rerank", "violations", "category_codes"]

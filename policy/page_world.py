"""A slate world with a planted page-context effect, for re-ranking with known truth.

Users and streams as in the built-in simulator (store.sources.simulator): a user's relevance for
a stream is ``r = sigmoid(bias + w_taste·log(C·taste[u, cat] + 0.1) + w_quality·quality[s] +
w_affinity·<u, s>/√d)``, and slot p (0-based) is examined with the simulator's planted
probability ``(p + 1)^-0.7``. On top of it, a stream's attractiveness depends on the page above it
(the planted page effect)::

    g = same_below      if the stream right above is of the same category     (0.5: a repeat bores)
      · pair_below      if the stream right above is of its *paired* category  (1.5: c − 1 leads to c)
      · saturation^n    n = streams of the same category anywhere above        (0.85)
    P(click at p) = min(1, examination(p) · r · g)

A request is a user with ``n_candidates`` random streams; the ranker's score of each is
``logit(r) + N(0, ranker_noise²)`` (it knows relevance, not the page effect). The truth of a page
is its expected clicks, :meth:`PageWorld.expected_clicks`. The logging policy (what the slate model
learns from) samples pages by Plackett–Luce on the scores (``temperature``), so the log shows
streams in many page contexts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from store.sources.simulator import EXAM_POWER


@dataclass(frozen=True)
class PageWorldConfig:
    seed: int = 0
    n_users: int = 500
    n_streams: int = 300
    n_categories: int = 8
    n_candidates: int = 40
    k: int = 10
    latent_dim: int = 8
    taste_concentration: float = 0.4
    relevance_bias: float = -1.0
    w_taste: float = 0.8
    w_quality: float = 0.6
    w_affinity: float = 0.5
    same_below: float = 0.5
    pair_below: float = 1.5
    saturation: float = 0.85
    ranker_noise: float = 0.3


@dataclass
class Requests:
    user: np.ndarray        # [R]
    cand: np.ndarray        # [R, n] stream ids
    score: np.ndarray       # [R, n] the ranker's score (logit scale)
    rel: np.ndarray         # [R, n] true relevance
    cat: np.ndarray         # [R, n] category


@dataclass
class Slates:
    """Logged pages: slot-by-slot candidate features and clicks."""
    score: np.ndarray       # [N, k]
    cat: np.ndarray         # [N, k]
    click: np.ndarray       # [N, k] 0/1


class PageWorld:
    def __init__(self, cfg: PageWorldConfig = PageWorldConfig()):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        C, d = cfg.n_categories, cfg.latent_dim
        self.taste = rng.dirichlet(np.full(C, cfg.taste_concentration), size=cfg.n_users)
        self.user_vec = rng.normal(size=(cfg.n_users, d))
        self.category = rng.integers(0, C, cfg.n_streams)
        self.quality = rng.normal(0, 1, cfg.n_streams)
        self.stream_vec = rng.normal(size=(cfg.n_streams, d))
        self.rng = np.random.default_rng(cfg.seed + 1_000_003)

    def relevance(self, user: np.ndarray, stream: np.ndarray) -> np.ndarray:
        c = self.cfg
        cat = self.category[stream]
        taste = np.take_along_axis(self.taste[user], cat, axis=1) if cat.ndim == 2 else self.taste[user, cat]
        aff = (self.user_vec[user][..., None, :] * self.stream_vec[stream]).sum(-1) / np.sqrt(c.latent_dim) \
            if stream.ndim == 2 else (self.user_vec[user] * self.stream_vec[stream]).sum(-1) / np.sqrt(c.latent_dim)
        x = c.relevance_bias + c.w_taste * np.log(c.n_categories * taste + 0.1) + c.w_quality * self.quality[stream] \
            + c.w_affinity * aff
        return 1.0 / (1.0 + np.exp(-x))

    def requests(self, n: int) -> Requests:
        c = self.cfg
        user = self.rng.integers(0, c.n_users, n)
        cand = np.argsort(self.rng.random((n, c.n_streams)), axis=1)[:, :c.n_candidates]
        rel = self.relevance(user, cand)
        score = np.log(rel / (1 - rel)) + self.rng.normal(0, c.ranker_noise, rel.shape)
        return Requests(user, cand, score, rel, self.category[cand])

    def context_effect(self, cats: np.ndarray) -> np.ndarray:
        """[..., k] the planted multiplier g of each slot of pages with these categories by slot."""
        c = self.cfg
        cats = np.asarray(cats)
        g = np.ones(cats.shape)
        above = cats[..., :-1]
        here = cats[..., 1:]
        g[..., 1:] *= np.where(above == here, c.same_below, 1.0)
        g[..., 1:] *= np.where((above + 1) % c.n_categories == here, c.pair_below, 1.0)
        k = cats.shape[-1]
        same_above = (cats[..., :, None] == cats[..., None, :]) & np.tril(np.ones((k, k), bool), -1)
        g *= c.saturation ** same_above.sum(-1)
        return g

    def click_prob(self, rel_by_slot: np.ndarray, cats_by_slot: np.ndarray) -> np.ndarray:
        k = rel_by_slot.shape[-1]
        exam = (np.arange(k) + 1.0) ** -EXAM_POWER
        return np.minimum(1.0, exam * rel_by_slot * self.context_effect(cats_by_slot))

    def expected_clicks(self, req: Requests, pages: np.ndarray) -> np.ndarray:
        """[R] the true expected clicks of each request's page (``pages`` [R, k]: candidate indices)."""
        rel = np.take_along_axis(req.rel, pages, axis=1)
        cats = np.take_along_axis(req.cat, pages, axis=1)
        return self.click_prob(rel, cats).sum(1)

    def log(self, n: int, temperature: float = 1.0) -> Slates:
        """``n`` logged pages from the Plackett–Luce logging policy, with sampled clicks."""
        req = self.requests(n)
        g = self.rng.gumbel(size=req.score.shape)
        pages = np.argsort(-(req.score / temperature + g), axis=1)[:, :self.cfg.k]
        rel = np.take_along_axis(req.rel, pages, axis=1)
        cats = np.take_along_axis(req.cat, pages, axis=1)
        p = self.click_prob(rel, cats)
        click = (self.rng.random(p.shape) < p).astype(np.float32)
        return Slates(np.take_along_axis(req.score, pages, axis=1), cats, click)


class PlantedValue:
    """policy.rerank's slot value from the planted truth of one request (the oracle: a ceiling for
    the re-ranker, and the check that beam search maximises what it is given)."""

    def __init__(self, world: PageWorld, rel: np.ndarray):
        self.world, self.rel = world, np.asarray(rel)      # rel [n]: the request's true relevance

    def start(self, cand, cats, scores):
        return {"seq": np.zeros((1, 0), np.int64), "cand": np.asarray(cand), "cats": np.asarray(cats)}

    def values(self, st, slot):
        seqs, cats = st["seq"], st["cats"]
        B, n = len(seqs), len(st["cand"])
        pages = np.concatenate([np.repeat(cats[seqs][:, None, :], n, 1),
                                np.broadcast_to(cats[None, :, None], (B, n, 1))], axis=2)   # [B, n, slot+1]
        g = self.world.context_effect(pages)[..., -1]
        return np.minimum(1.0, (slot + 1.0) ** -EXAM_POWER * self.rel[st["cand"]][None, :] * g)

    def advance(self, st, parents, chosen, slot):
        return {**st, "seq": np.concatenate([st["seq"][parents], np.asarray(chosen)[:, None]], 1)}


__all__ = ["PageWorldConfig", "PageWorld", "PlantedValue", "Requests", "Slates"]

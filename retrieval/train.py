r"""Training of the two-tower model: in-batch sampled softmax with logQ correction, plus uniform
negatives (mixed negative sampling, Yang et al. 2020), early stopping on the newest queries.

For a batch of ``B`` queries with targets :math:`t_i` and ``M`` uniformly drawn streams, the
candidates are the ``B`` targets and the ``M`` draws; each logit is corrected by the log of the
candidate's expected count in the sample (Yi et al., RecSys 2019),

.. math::  \ell_{ij} = u_i^\top s_j / \tau - \log(B\,p_j + M / N),

where :math:`p_j` is stream :math:`j`'s share of the training targets, so that popular streams are
not over-penalised for appearing as negatives more often. A candidate equal to the query's own
target (a repeated stream in the batch) is masked. Multi-interest users use, per query, the
interest closest to its target (label-aware attention, MIND).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data import QueryBatch
from .model import TwoTower

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-6
    temperature: float = 0.05
    uniform_negatives: int = 512
    valid_frac: float = 0.1          # the newest queries (by time): early stopping
    patience: int = 2
    seed: int = 0
    num_threads: Optional[int] = None
    history: list = field(default_factory=list)


def _tensors(b: QueryBatch, idx: np.ndarray) -> tuple:
    return (torch.as_tensor(b.seq[idx]), torch.as_tensor(b.gap[idx]), torch.as_tensor(b.long[idx]),
            torch.as_tensor(b.target[idx]))


@torch.no_grad()
def user_vectors(model: TwoTower, batch: QueryBatch, chunk: int = 2048) -> torch.Tensor:
    """``[B, K, d]`` user vectors of every query (eval mode)."""
    model.eval()
    out = []
    for a in range(0, len(batch), chunk):
        idx = np.arange(a, min(a + chunk, len(batch)))
        seq, gap, long, _ = _tensors(batch, idx)
        out.append(model.users(seq, gap, long))
    return torch.cat(out) if out else torch.zeros(0, model.cfg.interests, model.cfg.dim)


@torch.no_grad()
def rank_metrics(model: TwoTower, batch: QueryBatch, ks=(10, 50)) -> dict:
    """``recall@k`` (share of targets in the top k of all streams, exact search) and ``mrr``
    (mean 1 / rank, ties counted against the target) of ``batch``'s queries."""
    if not len(batch):
        return {**{f"recall@{k}": float("nan") for k in ks}, "mrr": float("nan")}
    streams = model.all_streams()[1:]                                   # [N, d]
    users = user_vectors(model, batch)
    ranks = []
    for a in range(0, len(batch), 2048):
        sc = TwoTower.score(users[a:a + 2048], streams)                  # [b, N]
        tgt = torch.as_tensor(batch.target[a:a + 2048]) - 1
        ts = sc.gather(1, tgt.clamp(min=0)[:, None])
        r = (sc >= ts).sum(1)                                            # 1-based, ties against
        ranks.append(torch.where(tgt >= 0, r, torch.full_like(r, 10 ** 9)))
    r = torch.cat(ranks).double()
    out = {f"recall@{k}": float((r <= k).double().mean()) for k in ks}
    out["mrr"] = float((1.0 / r).mean())
    return out


def recall_at(model: TwoTower, batch: QueryBatch, k: int = 50) -> float:
    return rank_metrics(model, batch, ks=(k,))[f"recall@{k}"]


def loss_of(model: TwoTower, seq, gap, long, target, logq: torch.Tensor, cfg: TrainConfig,
            gen: torch.Generator) -> torch.Tensor:
    B = len(target)
    n = model.cfg.n_streams
    users = model.users(seq, gap, long)                                 # [B, K, d]
    uni = torch.randint(1, n + 1, (cfg.uniform_negatives,), generator=gen)
    cand = torch.cat([target, uni])                                     # [B + M]
    s = model.stream_tower(cand)                                        # [B + M, d]
    if users.shape[1] > 1:                                              # the interest closest to the target
        with torch.no_grad():
            k = torch.einsum("bkd,bd->bk", users, s[:B]).argmax(1)
        u = users[torch.arange(B), k]
    else:
        u = users[:, 0]
    logits = u @ s.T / cfg.temperature - logq[cand][None, :]            # [B, B + M]
    same = cand[None, :] == target[:, None]
    same[torch.arange(B), torch.arange(B)] = False                      # keep each query's own positive
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(B))


def fit(model: TwoTower, train: QueryBatch, cfg: Optional[TrainConfig] = None, *,
        progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Train ``model`` in place on ``train`` (queries with ``t``); returns the history and the
    best epoch by the validation mrr (restored): ``{"epochs": [{epoch, loss, valid_recall@50,
    valid_mrr, seconds}], "best_epoch"}``."""
    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        order = np.argsort(train.t, kind="stable") if train.t is not None else np.arange(len(train))
        n_valid = int(len(order) * cfg.valid_frac) if len(order) >= 200 else 0
        valid = train.take(order[len(order) - n_valid:]) if n_valid else None
        fit_idx = order[: len(order) - n_valid]
        n = model.cfg.n_streams
        freq = np.bincount(train.target[fit_idx], minlength=n + 1).astype(np.float64)[: n + 1]
        p = freq / max(freq.sum(), 1.0)
        B = min(cfg.batch_size, max(len(fit_idx), 1))
        logq = torch.as_tensor(np.log(B * p + cfg.uniform_negatives / n + 1e-12), dtype=torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        rng = np.random.default_rng(cfg.seed)
        best, best_state, bad, history = -math.inf, None, 0, []
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm = rng.permutation(fit_idx)
            total, steps = 0.0, 0
            for a in range(0, len(perm), B):
                idx = perm[a:a + B]
                if len(idx) < 2:
                    continue
                loss = loss_of(model, *_tensors(train, idx), logq, cfg, gen)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                total += float(loss.detach())
                steps += 1
            vm = rank_metrics(model, valid) if valid is not None else {"recall@50": float("nan"), "mrr": float("nan")}
            rec = vm["mrr"]                    # (recall@50 saturates on easy data; the mrr does not)
            row = {"epoch": epoch, "loss": round(total / max(steps, 1), 4), "valid_recall@50": round(vm["recall@50"], 4),
                   "valid_mrr": round(vm["mrr"], 4),
                   "seconds": round(time.perf_counter() - t0, 2), "queries_per_s": round(len(perm) / max(time.perf_counter() - t0, 1e-9))}
            history.append(row)
            log.info("two-tower epoch %d: %s", epoch, row)
            if progress:
                progress(row)
            if valid is None:
                continue
            if rec > best:
                best, bad = rec, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        best_epoch = max(history, key=lambda r: r["valid_mrr"])["epoch"] if valid is not None and history else len(history)
        return {"epochs": history, "best_epoch": best_epoch, "valid_queries": int(n_valid),
                "train_queries": int(len(fit_idx))}
    finally:
        torch.set_num_threads(threads)


__all__ = ["TrainConfig", "fit", "loss_of", "user_vectors", "rank_metrics", "recall_at"]

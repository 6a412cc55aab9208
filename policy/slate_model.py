"""A sequential slate model: the click probability of a stream at a slot given the streams above.

Seed 003's TRNN, small: a GRU reads the page top to bottom; at slot t its state ``h_t`` sums up
the streams placed above, and a candidate's click logit is an MLP of that state and of the
candidate's relation to the page::

    x_j   = W_tok [score_j ; E(cat_j)]                     token of the stream at slot j
    h_0   = learned;   h_{t+1} = GRU(x_t, h_t)             h_t: [B, hidden]
    z_ct  = [score_c ; E(cat_c) ; E(cat_{t-1}) ; P(t) ; 1{cat_c = cat_{t-1}} ; n_c,t / k ; h_t]
    P(click c at t | page above) = σ(MLP(z_ct) + T[cat_{t-1}, cat_c])

``T`` is a learned category-transition table (what a stream right below another category is
worth; an MLP alone learns such pairwise effects slowly). ``score`` is the ranker's score of the stream (logit scale), ``cat`` its category (a vocabulary
learned from the log; unseen categories share one code), ``n_c,t`` the number of streams of c's
category above slot t. Trained on logged pages with binary cross-entropy on each slot's click:
the model learns the position curve and the page-context effect together from logs whose pages
vary (a randomised or sampling logging policy).

:class:`SlateValue` adapts a trained model to :func:`policy.rerank.rerank`'s slot value.
Shapes: logged pages ``score, cat, click`` [N, k]; beam state ``h`` [B, hidden].
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class SlateModelConfig:
    n_categories: int = 16      # vocabulary size (+ "unknown" and "nothing above" codes)
    k: int = 10                 # slots modelled (later slots share the last position embedding)
    d_cat: int = 8
    d_pos: int = 4
    hidden: int = 32
    mlp: int = 64


class SlateModel(nn.Module):
    def __init__(self, cfg: SlateModelConfig, vocab: np.ndarray):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("vocab", torch.as_tensor(np.asarray(vocab, dtype=np.int64)))
        V = cfg.n_categories
        self.unknown, self.none = V, V + 1
        self.cat = nn.Embedding(V + 2, cfg.d_cat)
        self.pos = nn.Embedding(cfg.k, cfg.d_pos)
        self.tok = nn.Linear(1 + cfg.d_cat, cfg.hidden)
        self.gru = nn.GRUCell(cfg.hidden, cfg.hidden)
        self.h0 = nn.Parameter(torch.zeros(cfg.hidden))
        self.transition = nn.Embedding((V + 2) * (V + 2), 1)
        self.head = nn.Sequential(nn.Linear(1 + 2 * cfg.d_cat + cfg.d_pos + 2 + cfg.hidden, cfg.mlp), nn.ReLU(),
                                  nn.Linear(cfg.mlp, 1))
        self.reset_parameters()

    def reset_parameters(self):
        for m in (self.cat, self.pos, self.tok, self.gru, self.head[0], self.head[2]):
            m.reset_parameters()
        nn.init.zeros_(self.h0)
        nn.init.zeros_(self.transition.weight)

    def codes(self, cats) -> torch.Tensor:
        """Category values -> vocabulary codes (unseen or negative -> unknown)."""
        c = torch.as_tensor(np.asarray(cats, dtype=np.int64))
        if len(self.vocab) == 0:
            return torch.full_like(c, self.unknown)
        i = torch.searchsorted(self.vocab, c).clamp(max=len(self.vocab) - 1)
        return torch.where((self.vocab[i] == c) & (c >= 0), i, torch.full_like(c, self.unknown))

    def token(self, score: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.tok(torch.cat([score[..., None], self.cat(code)], -1))

    def logit(self, h, score, code, prev_code, slot: int, n_same) -> torch.Tensor:
        """Click logits [B, n] of candidates (score, code: [n] or [B, n]) at ``slot`` under states
        h [B, hidden] with the streams above: prev_code [B], n_same [B, n]."""
        B = h.shape[0]
        n = score.shape[-1]
        score = score.expand(B, n)
        code = code.expand(B, n)
        pos = self.pos.weight[min(slot, self.cfg.k - 1)].expand(B, n, -1)
        same = ((code == prev_code[:, None]) & (code != self.unknown)).float()
        z = torch.cat([score[..., None], self.cat(code), self.cat(prev_code)[:, None, :].expand(B, n, -1), pos,
                       same[..., None], (n_same.float() / self.cfg.k)[..., None], h[:, None, :].expand(B, n, -1)], -1)
        pair = self.transition(prev_code[:, None] * (self.cfg.n_categories + 2) + code).squeeze(-1)
        return self.head(z).squeeze(-1) + pair

    def forward(self, score: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Logged pages score, code [N, k] -> click logits [N, k] (slot t given slots < t)."""
        N, k = score.shape
        h = self.h0.expand(N, -1)
        prev = torch.full((N,), self.none, dtype=torch.long)
        out = []
        for t in range(k):
            c = code[:, t]
            n_same = ((code[:, :t] == c[:, None]) & (c[:, None] != self.unknown)).sum(1)
            out.append(self.logit(h, score[:, t:t + 1], c[:, None], prev, t, n_same[:, None])[:, 0])
            h = self.gru(self.token(score[:, t], c), h)
            prev = c
        return torch.stack(out, 1)

    def __repr__(self):
        c = self.cfg
        return (f"SlateModel(categories={c.n_categories}, k={c.k}, hidden={c.hidden}, mlp={c.mlp}, "
                f"params={sum(p.numel() for p in self.parameters())})")


def train_slate_model(score: np.ndarray, cat: np.ndarray, click: np.ndarray, *, epochs: int = 6,
                      batch: int = 512, lr: float = 3e-3, seed: int = 0, valid_share: float = 0.1,
                      cfg: SlateModelConfig | None = None) -> tuple[SlateModel, dict]:
    """Fit on logged pages (arrays [N, k]); returns the model and its curve (train / valid log loss
    by epoch; the epoch with the best validation loss is kept)."""
    torch.manual_seed(seed)
    score = np.nan_to_num(np.asarray(score, dtype=np.float32), nan=0.0, posinf=10.0, neginf=-10.0).clip(-10, 10)
    cat = np.asarray(cat, dtype=np.int64)
    click = np.asarray(click, dtype=np.float32)
    N, k = score.shape
    vocab = np.unique(cat[cat >= 0])
    cfg = cfg or SlateModelConfig()
    cfg = SlateModelConfig(**{**asdict(cfg), "n_categories": len(vocab), "k": k})
    model = SlateModel(cfg, vocab)
    S = torch.as_tensor(score)
    C = model.codes(cat)
    Y = torch.as_tensor(click)
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(N))
    n_valid = int(N * valid_share) if N >= 50 else 0
    va, tr = perm[:n_valid], perm[n_valid:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lossf = nn.BCEWithLogitsLoss()
    curve = {"train": [], "valid": []}
    best, best_state = float("inf"), None
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        order = tr[torch.randperm(len(tr))]
        tot = 0.0
        for i in range(0, len(order), batch):
            b = order[i:i + batch]
            loss = lossf(model(S[b], C[b]), Y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        curve["train"].append(tot / max(len(tr), 1))
        if n_valid:
            model.eval()
            with torch.no_grad():
                v = float(lossf(model(S[va], C[va]), Y[va]))
            curve["valid"].append(v)
            if v < best:
                best, best_state = v, {n: t.clone() for n, t in model.state_dict().items()}
        log.info("slate model epoch %d/%d: train %.4f valid %s (%.0f pages/s)", ep + 1, epochs, curve["train"][-1],
                 f"{curve['valid'][-1]:.4f}" if n_valid else "-", (ep + 1) * len(tr) / (time.perf_counter() - t0))
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, curve


def save_slate_model(model: SlateModel, path) -> None:
    torch.save({"config": asdict(model.cfg), "vocab": model.vocab.numpy(), "state": model.state_dict()}, path)


def load_slate_model(path) -> SlateModel:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = SlateModel(SlateModelConfig(**blob["config"]), blob["vocab"])
    model.load_state_dict(blob["state"])
    model.eval()
    return model


class SlateValue:
    """policy.rerank's slot value from a SlateModel: P̂(click) of each candidate at the slot."""

    def __init__(self, model: SlateModel):
        self.model = model

    @torch.no_grad()
    def start(self, cand, cats, scores):
        m = self.model
        s = torch.as_tensor(np.nan_to_num(np.asarray(scores, np.float32), nan=0.0, posinf=10.0,
                                          neginf=-10.0).clip(-10, 10))
        code = m.codes(cats)
        counts = torch.zeros((1, m.cfg.n_categories + 2), dtype=torch.long)
        return {"h": m.h0[None, :].clone(), "prev": torch.tensor([m.none]), "counts": counts, "s": s, "code": code}

    @torch.no_grad()
    def values(self, st, slot):
        n_same = st["counts"][:, st["code"]]
        n_same = torch.where(st["code"][None, :] == self.model.unknown, 0, n_same)
        return torch.sigmoid(self.model.logit(st["h"], st["s"][None, :], st["code"][None, :], st["prev"], slot,
                                              n_same)).numpy()

    @torch.no_grad()
    def advance(self, st, parents, chosen, slot):
        p = torch.as_tensor(np.asarray(parents, np.int64))
        c = torch.as_tensor(np.asarray(chosen, np.int64))
        code = st["code"][c]
        h = self.model.gru(self.model.token(st["s"][c], code), st["h"][p])
        counts = st["counts"][p].clone()
        counts[torch.arange(len(c)), code] += 1
        return {**st, "h": h, "prev": code, "counts": counts}

    @torch.no_grad()
    def feed(self, st, score, cat, slot):
        """A fixed slot above the re-ranked ones (rerank's start_slot)."""
        code = self.model.codes([cat])
        s = torch.tensor([min(max(score, -10.0), 10.0)], dtype=torch.float32)
        h = self.model.gru(self.model.token(s, code), st["h"])
        counts = st["counts"].clone()
        counts[0, code[0]] += 1
        return {**st, "h": h, "prev": code, "counts": counts}


__all__ = ["SlateModelConfig", "SlateModel", "train_slate_model", "save_slate_model", "load_slate_model",
           "SlateValue"]

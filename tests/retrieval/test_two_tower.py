"""The two-tower model (retrieval/model.py, retrieval/train.py) and its evaluation on the simulator."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch


def _model(interests=1, **kw):
    from retrieval.model import TwoTowerConfig, build
    cfg = TwoTowerConfig(n_streams=30, n_categories=3, dim=16, seq_len=6, long_len=10, interests=interests,
                         graph_dim=4, n_stats=2, **kw)
    rng = np.random.default_rng(0)
    return build(cfg, category=rng.integers(0, 4, 31), graph=rng.normal(size=(31, 4)), stats=rng.normal(size=(31, 2)))


@pytest.mark.parametrize("interests", [1, 3])
def test_shapes_norms_and_cold_users(interests):
    m = _model(interests).eval()
    seq = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 3, 4, 5, 6]])       # a user with no history, one with 4
    gap = torch.tensor([[0] * 6, [0, 0, 9, 7, 3, 1]])
    long = torch.tensor([[0] * 10, [0] * 6 + [3, 4, 5, 6]])
    u = m.users(seq, gap, long)
    assert u.shape == (2, interests, 16) and torch.isfinite(u).all()
    assert torch.allclose(u.norm(dim=-1), torch.ones(2, interests), atol=1e-5)
    s = m.all_streams()
    assert s.shape == (31, 16)
    assert m.score(u, s).shape == (2, 31)
    # the history matters, and so does the time gap of a token
    u2 = m.users(seq, torch.tensor([[0] * 6, [0, 0, 1, 1, 1, 1]]), long)
    assert not torch.allclose(u[1], u2[1])


def test_training_learns_a_planted_next_stream():
    """Stream r is always followed by r + 1: after training, the top stream is the successor."""
    from retrieval.data import Sessions, Vocab, training_queries
    from retrieval.train import TrainConfig, fit, recall_at
    rng = np.random.default_rng(1)
    users, streams, ts = [], [], []
    for u in range(300):
        s0 = rng.integers(1, 20)
        for j in range(8):
            users.append(u)
            streams.append(s0 + j)
            ts.append(u * 100_000 + j * 3600.0)
    ses = Sessions.from_watches(users, streams, ts)
    vocab = Vocab(np.arange(1, 30))
    q = training_queries(ses, vocab, seq_len=6, long_len=10)
    m = _model()
    before = recall_at(m, q, 1)
    info = fit(m, q, TrainConfig(epochs=6, batch_size=128, uniform_negatives=16, lr=5e-3))
    after = recall_at(m, q, 1)
    assert after > 0.8 and after > before + 0.5, (before, after, info["epochs"])


def _planted_frames(seed=0):
    """Planted truth: each user has a favourite category and watches its streams 20x more often
    than their global popularity says (streams' popularity is heavy-tailed)."""
    rng = np.random.default_rng(seed)
    n_users, n_streams, n_cat = 400, 200, 8
    cat = rng.integers(0, n_cat, n_streams)
    pop = rng.pareto(1.2, n_streams) + 1
    fav = rng.integers(0, n_cat, n_users)
    rows = []
    for u in range(n_users):
        w = pop * np.where(cat == fav[u], 20.0, 1.0)
        t = 0.0
        for s in rng.choice(n_streams, size=40, p=w / w.sum()):
            t += rng.exponential(3600)
            rows.append((u, s, t, cat[s]))
    f = pd.DataFrame(rows, columns=["user_id", "stream_id", "ts", "category"]).sort_values("ts")
    cut = f.ts.quantile(0.75)
    return f[f.ts < cut], f[f.ts >= cut]


def test_the_two_tower_learns_planted_tastes_that_popularity_and_repeat_miss():
    from retrieval.evaluate import evaluate_retrieval
    train, test = _planted_frames()
    rows = evaluate_retrieval(train, test, models=["popularity", "repeat+popularity", "two_tower", "candidates"],
                              epochs=6, graph_vectors=False)
    got = {(r["model"], r["subset"]): r for r in rows}
    for subset in ("all", "new"):
        tt, pop = got[("two_tower", subset)], got[("popularity", subset)]
        assert tt["n"] == pop["n"] > 500
        assert tt["recall@50"] > pop["recall@50"] + 0.05, (subset, tt, pop)
        assert tt["ndcg@10"] > pop["ndcg@10"], (subset, tt, pop)
    assert got[("candidates", "all")]["recall@50"] > got[("repeat+popularity", "all")]["recall@50"] + 0.05
    assert got[("two_tower", "new")]["n"] < got[("two_tower", "all")]["n"]


def test_padding_never_makes_nan_and_does_not_leak_into_the_user_vector():
    m = _model(3).eval()
    seq = torch.tensor([[0, 0, 0, 0, 7, 8]])
    gap = torch.tensor([[0, 0, 0, 0, 2, 1]])
    long = torch.tensor([[0] * 8 + [7, 8]])
    u = m.users(seq, gap, long)
    # what sits under the padding (its gap bucket) changes nothing
    u2 = m.users(seq, torch.tensor([[5, 9, 3, 1, 2, 1]]), long)
    assert torch.isfinite(u).all() and torch.allclose(u, u2, atol=1e-6)

"""The personalised fusion network (ranking.fusion): it starts at the fixed weights, learns
per-user weights where the users' utilities differ (planted), beats one global weight vector there
by true utility, and a saved version serves exactly the score the network gives offline."""
import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from ranking.fusion import (FusionConfig, FusionNet, load_fusion, logged_utility, save_fusion,  # noqa: E402
                            task_matrix, train_fusion)
from ranking.scorer import DEFAULT_FUSION, fuse  # noqa: E402


def _planted(n_requests: int, seed: int, L: int = 8, purchase_value: float = 5.0):
    """Two kinds of users: buyers (u_purchases_7d ≈ 5) buy what they click with the candidate's
    pCVR and stay briefly; watchers (0) never buy and stay long where the stay score is high. Task
    scores are independent across candidates, so no single weight vector suits both."""
    rng = np.random.default_rng(seed)
    buyer = rng.random(n_requests) < 0.5
    rows = np.repeat(np.arange(n_requests), L)
    b = buyer[rows]
    p_ctr = rng.uniform(0.05, 0.6, len(rows))
    p_cvr = rng.uniform(0.01, 0.9, len(rows))
    stay_s = np.exp(rng.uniform(np.log(10), np.log(1200), len(rows)))
    buy_p = np.where(b, p_cvr, 0.0)
    stay_mean = np.where(b, 20.0, stay_s)
    click = rng.random(len(rows)) < p_ctr
    purchase = click & (rng.random(len(rows)) < buy_p)
    stay = np.where(click, rng.exponential(stay_mean), 0.0)
    frame = pd.DataFrame({"request_id": [f"r{seed}-{r}" for r in rows], "click": click.astype(int),
                          "purchase": purchase.astype(int), "stay_s": stay,
                          "u_purchases_7d": np.where(b, rng.poisson(5, len(rows)), 0).astype(float),
                          "u_watches_7d": rng.poisson(3, len(rows)).astype(float)})
    f = task_matrix(p_ctr, p_cvr, stay_s)
    true_u = p_ctr * (1.0 + purchase_value * buy_p + stay_mean / 60.0)   # E[click + 5 purchases + stay minutes]
    return frame, f, true_u


def _ndcg(groups, score, gain):
    from ranking.evaluate import ndcg_at_k
    return ndcg_at_k(groups, score, gain, k=8)


def test_the_network_starts_at_the_fixed_weights_and_the_config_is_checked():
    frame, f, _ = _planted(20, seed=0)
    net = FusionNet(["u_purchases_7d", "u_watches_7d"])
    w = net(net.features(frame)).detach().numpy()
    np.testing.assert_allclose(w, np.tile([1.0, 0.3, 0.2], (len(frame), 1)), rtol=1e-5)
    outs = {"p_ctr": np.exp(f[:, 0]), "p_cvr": np.exp(f[:, 1]), "stay_s": np.expm1(f[:, 2])}
    want = fuse(outs, DEFAULT_FUSION["default"])
    got = net.score(net.features(frame), torch.as_tensor(f, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # logged utility: stay counts on clicked rows only, in minutes
    u = logged_utility(pd.DataFrame({"click": [1, 0, 1], "purchase": [1, 0, 0], "stay_s": [120.0, 600.0, np.nan]}),
                       {"click": 1.0, "purchase": 2.0, "stay_min": 0.5})
    assert u.tolist() == [1 + 2 + 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="utility"):
        FusionConfig(utility={"click": -1.0})
    with pytest.raises(ValueError, match="utility"):
        FusionConfig(utility={"gmv": 1.0})
    with pytest.raises(ValueError, match="lacks"):
        task_matrix([0.5], None, [3.0])


def test_personalised_weights_follow_the_planted_users_and_beat_one_global_vector():
    fit, ff, _ = _planted(1500, seed=1)
    stop, sf, _ = _planted(300, seed=2)
    test, tf, true_u = _planted(600, seed=3)
    nets = {}
    for name, personalised in (("global", False), ("personalised", True)):
        cfg = FusionConfig(utility={"click": 1.0, "purchase": 5.0, "stay_min": 1.0}, personalised=personalised, seed=0)
        nets[name], hist = train_fusion(fit, ff, stop, sf, cfg)
        assert hist["best_stop_loss"] < hist["initial_stop_loss"]          # it learned something on held-out lists
    net = nets["personalised"]
    with torch.no_grad():
        w = net(net.features(test)).numpy()
    buyer = test["u_purchases_7d"].to_numpy() > 0
    cvr, stay = net.tasks.index("cvr"), net.tasks.index("stay")
    assert w[buyer, cvr].mean() > 2 * w[~buyer, cvr].mean()               # buyers: conversion matters
    assert w[~buyer, stay].mean() > 2 * w[buyer, stay].mean()             # watchers: stay matters
    groups = test["request_id"].to_numpy()
    ndcg = {}
    for name, m in nets.items():
        with torch.no_grad():
            ndcg[name] = _ndcg(groups, m.score(m.features(test), torch.as_tensor(tf, dtype=torch.float32)).numpy(), true_u)
    ndcg["fixed"] = _ndcg(groups, tf @ np.array([1.0, 0.3, 0.2]), true_u)
    assert ndcg["personalised"] > ndcg["global"] + 0.01, ndcg
    assert ndcg["personalised"] > ndcg["fixed"] + 0.01, ndcg


def test_a_saved_fusion_serves_the_offline_score_and_explicit_weights_win(tmp_path):
    from ranking.artifacts import save_ranker
    from ranking.dataset import RankerInputs
    from ranking.evaluate import outputs
    from ranking.scorer import RankerScorer
    from ranking.train import build_ranker
    from tests.ranking.test_dataset import _frame
    f = _frame()
    f["u_purchases_7d"] = [3.0, 0.0, 3.0, 1.0, 0.0, 3.0]
    f["u_watches_7d"] = [1.0, 8.0, 1.0, np.nan, 2.0, 1.0]
    inputs = RankerInputs.fit(f, ["a", "b"])
    torch.manual_seed(0)
    model = build_ranker(inputs, d_model=8, n_heads=2, n_experts=2, expert_dim=16, tower_dim=8,
                         use_biasnet=False).eval()
    o = outputs(model, inputs, f)
    fm = task_matrix(o["p_ctr"], o["p_cvr"], np.expm1(np.maximum(o["stay"], 0.0)))
    net = FusionNet(["u_purchases_7d", "u_watches_7d"], hidden=4)
    net.fit_normaliser(f[net.feature_cols].to_numpy())
    with torch.no_grad():                                 # a network far from its start: per-user weights
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    save_ranker(model, inputs, tmp_path)
    save_fusion(net, tmp_path, config=FusionConfig())
    loaded = load_fusion(tmp_path)
    assert repr(loaded) == repr(net) and loaded.feature_cols == net.feature_cols
    with torch.no_grad():
        want = net.score(net.features(f), torch.as_tensor(fm, dtype=torch.float32)).double().numpy()
        w = net(net.features(f)).numpy()
    assert np.ptp(w[:, 0]) > 1e-3                          # the weights differ between users
    scorer = RankerScorer.load(tmp_path)
    assert scorer.fusion_net is not None
    for u in (10, 11):                                    # one user's request at a time, as served
        req = f[f["user_id"] == u]
        np.testing.assert_allclose(scorer.predict(req), want[req.index], rtol=1e-5, atol=1e-5)
    fixed = RankerScorer.load(tmp_path, fusion={"default": {"ctr": 1.0}})
    assert fixed.fusion_net is None
    np.testing.assert_allclose(fixed.predict(f.iloc[[1]]), np.log(o["p_ctr"][[1]]), rtol=1e-5)

"""The transformer ranker end to end: trained by the registry job on the world's event log (real
Feast features with their lists), promoted, served by /v1/recommend (Biasnet removed, objectives
fused), hot-swapped back to the GBDT when rejected; the promotion rule."""
from __future__ import annotations

import pytest

from ranking.promotion import should_promote
from ranking.train import TrainConfig

TINY = {"d_model": 8, "n_heads": 2, "n_experts": 2, "expert_dim": 16, "tower_dim": 8}


@pytest.fixture
def ranker_version(world, register_gbdt):
    from store.registry import list_models, promote, reject
    from ranking.job import train_and_register_ranker
    register_gbdt()                        # the ranker embeds the active GBDT's leaves
    row = train_and_register_ranker(world, ranker_overrides=TINY,
                                    train_config=TrainConfig(epochs=1, batch_size=256, threads=1, seed=0))
    if row.get("skipped"):                 # trained by an earlier test (rejected at its end)
        promote(world.database_url, "ranker", row["version"])
    yield row
    for m in list_models(world.database_url, "ranker"):
        reject(world.database_url, "ranker", m["version"])


def test_registry_job_trains_and_promotes(world, ranker_version):
    from pathlib import Path
    from store.registry import active_model, list_models
    active = active_model(world.database_url, "ranker")
    assert active["version"] == ranker_version["version"]
    m = active["metrics"]
    for k in ("auc", "gauc", "logloss", "cvr_auc_all", "stay_rmse", "n_train", "gbdt_version"):
        assert k in m, k
    assert m["gbdt_version"] is not None and 0.0 <= m["auc"] <= 1.0
    # the offline value from the validation window's randomised requests (ope.page_value): there
    # when the window has MIN_REQUESTS of them (how many depends on the hour the world was built)
    from ope.page_value import MIN_REQUESTS
    from ranking.gbdt import time_split
    from ranking.samples import impression_labels
    from store.ingest import load_catalog, load_events
    labels = impression_labels(load_events(world.database_url), load_catalog(world.database_url).get("streams"))
    _, valid = time_split(labels, 0.2)
    n_rnd = valid.loc[valid["policy"] == "randomised", "request_id"].nunique()
    ov = m["offline_value"]
    if n_rnd >= MIN_REQUESTS:
        assert ov["requests"] == n_rnd and ov["ci_low"] <= ov["estimate"] <= ov["ci_high"] and ov["logged"] > 0
    else:
        assert ov is None
    assert Path(ranker_version["report"]).exists()
    # same data, same config: no second version
    from ranking.job import train_and_register_ranker
    again = train_and_register_ranker(world, ranker_overrides=TINY,
                                      train_config=TrainConfig(epochs=1, batch_size=256, threads=1, seed=0))
    assert again["version"] == ranker_version["version"] and again.get("skipped")
    assert len(list_models(world.database_url, "ranker")) == 1


def test_recommend_serves_the_ranker_and_falls_back_when_rejected(world, make_app, ranker_version, live_ids):
    from store.registry import reject
    from ranking.scorer import RankerScorer
    app = make_app()
    client = app.test_client()
    cands = live_ids[:8]
    r = client.post("/v1/recommend", json={"user_id": 3, "candidates": cands, "k": 8})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["model"] == {"name": "ranker", "version": ranker_version["version"]}
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 8
    # the served scores are the scorer's (Biasnet-free) fused scores on the same Feast rows
    from feature_repo.online import OnlineFeatures
    from api.snapshot import stream_categories
    scorer = RankerScorer.load(ranker_version["artifact_path"])
    assert scorer.model.biasnet is None
    assert not [n for n, _ in scorer.model.named_parameters() if "biasnet" in n]
    cats = stream_categories(world.database_url, cands)
    frame = OnlineFeatures(world).features(3, cands, [cats.get(c) for c in cands])
    mine = dict(zip(cands, scorer.predict(frame, page="live_tab")))
    for it in body["items"]:
        assert it["score"] == pytest.approx(mine[it["stream_id"]], abs=1e-4)
    # rejected -> the next request is served by the GBDT (hot swap, no error)
    reject(world.database_url, "ranker", ranker_version["version"])
    r = client.post("/v1/recommend", json={"user_id": 3, "candidates": cands, "k": 8})
    assert r.status_code == 200 and r.get_json()["model"]["name"] == "gbdt"


def test_the_lean_request_path_scores_as_the_pandas_path(world, ranker_version, live_ids):
    """The request path (numpy assembly, cached candidate encodings, shared user lists) ranks
    exactly as the pandas path of training for the same features (scores within 1e-5)."""
    from datetime import datetime, timezone

    import numpy as np
    import torch

    from api.snapshot import stream_categories
    from feature_repo.online import OnlineFeatures, assemble, assemble_columns
    from ranking.gbdt import GBDTModel
    from ranking.scorer import RankerScorer, fuse
    from ranking.batches import to_tensors
    from store.registry import active_model
    scorer = RankerScorer.load(ranker_version["artifact_path"])
    gbdt = GBDTModel.load(active_model(world.database_url, "gbdt")["artifact_path"])
    online = OnlineFeatures(world)
    cands = list(live_ids)
    cats = stream_categories(world.database_url, cands)
    cat_list = [cats.get(c) for c in cands]
    streams = online.stream_rows(cands)
    now = datetime.now(timezone.utc)
    for user in (3, 7, 10_000_000):                       # known users and a cold start
        old = assemble(online.user_rows(user, cands, cat_list), streams, now)
        new = assemble_columns(online.user_columns(user, cands, cat_list), streams, now)
        for _ in range(2):                                 # the second call reads the candidate cache
            assert np.abs(scorer.predict(new, page="live_tab") - scorer.predict(old, page="live_tab")).max() <= 1e-5
        assert np.abs(gbdt.predict(new, num_threads=1) - gbdt.predict(old, num_threads=1)).max() <= 1e-9
        # the scorer's shortcuts (candidate cache, the user's history as one shared segment, the
        # fused MMoE matmul) against the model's plain forward on the full batch
        x = scorer.inputs.transform(new, with_position=False, num_threads=1)
        with torch.no_grad():
            ref = {k: v.double().numpy() for k, v in scorer.model.predict(to_tensors(x)).items()}
        weights = scorer.fusion.get("live_tab", scorer.fusion["default"])
        assert np.abs(fuse(ref, weights) - scorer.predict(new, page="live_tab")).max() <= 1e-5
    uncached = RankerScorer.load(ranker_version["artifact_path"], cache_candidates=False)
    assert np.abs(uncached.predict(new, page="live_tab") - scorer.predict(new, page="live_tab")).max() <= 1e-5


def test_promotion_rule():
    assert should_promote({"auc": 0.6}, None)[0]
    cur = {"version": "a", "metrics": {"auc": 0.70, "cvr_auc_all": 0.80}}
    assert should_promote({"auc": 0.70, "cvr_auc_all": 0.80}, cur)[0]
    ok, why = should_promote({"auc": 0.71, "cvr_auc_all": 0.79}, cur)
    assert not ok and "cvr_auc_all" in why
    assert not should_promote({"auc": 0.69}, cur)[0]
    assert not should_promote({}, cur)[0]


def test_a_second_version_is_judged_against_the_active_one_on_the_same_rows(world, ranker_version):
    """Head to head: the new version's registry metrics carry the active version's metrics on the
    new validation window, and the decision follows them (not the active's own, older window)."""
    from store.registry import active_model, list_models
    from ranking.job import train_and_register_ranker
    row = train_and_register_ranker(world, ranker_overrides=dict(TINY, d_model=4, n_heads=1),
                                    train_config=TrainConfig(epochs=1, batch_size=256, threads=1, seed=1))
    assert row["version"] != ranker_version["version"]
    versus = row["metrics"]["versus_active"]
    assert versus["version"] == ranker_version["version"] and versus["n"] == row["metrics"]["n_valid"]
    assert 0.0 <= versus["auc"] <= 1.0
    # the active one's value on the same randomised requests, when the window has enough of them
    assert "offline_value" in versus and (versus["offline_value"] is None) == (row["metrics"]["offline_value"] is None)
    worse = row["metrics"]["auc"] < versus["auc"] or (
        row["metrics"].get("cvr_auc_all") is not None and versus.get("cvr_auc_all") is not None
        and row["metrics"]["cvr_auc_all"] < versus["cvr_auc_all"])
    active = active_model(world.database_url, "ranker")["version"]
    assert active == (ranker_version["version"] if worse else row["version"])
    assert row["version"] in {m["version"] for m in list_models(world.database_url, "ranker")}

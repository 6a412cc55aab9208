"""STREAMRANK_FUSION=personalised end to end: the ranker job fits the fusion network on the
frozen ranker (logged utility with the configured weights), saves it beside the version, and
/v1/recommend serves its per-user weighted scores — not the fixed weights'."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from ranking.train import TrainConfig

TINY = {"d_model": 8, "n_heads": 2, "n_experts": 2, "expert_dim": 16, "tower_dim": 8}


def test_the_job_fits_a_personalised_fusion_and_the_api_serves_it(world_factory, make_app):
    from api.snapshot import stream_categories
    from feature_repo.online import OnlineFeatures
    from ranking.fusion import FUSION_FILE
    from ranking.job import train_and_register_ranker
    from ranking.scorer import DEFAULT_FUSION, RankerScorer, fuse
    from store.ingest import live_stream_ids
    from store.registry import active_model
    w = replace(world_factory("fusion"), fusion="personalised", fusion_utility="click=1,purchase=2,stay_min=0.5")
    row = train_and_register_ranker(w, ranker_overrides=TINY,
                                    train_config=TrainConfig(epochs=1, batch_size=256, threads=1, seed=0))
    active = active_model(w.database_url, "ranker")
    assert active["version"] == row["version"]
    fm = active["metrics"]["fusion"]
    assert fm["kind"] == "personalised" and fm["utility"] == {"click": 1.0, "purchase": 2.0, "stay_min": 0.5}
    assert set(fm["weights"]) == {"ctr", "cvr", "stay"} and fm["stop_loss"] <= fm["stop_loss_fixed"]
    assert (Path(row["artifact_path"]) / FUSION_FILE).exists()
    scorer = RankerScorer.load(row["artifact_path"])
    net = scorer.fusion_net
    assert net is not None and net.personalised and net.feature_cols and all(c.startswith("u_") for c in net.feature_cols)

    cands = live_stream_ids(w.database_url, datetime.now(timezone.utc))[:8]
    client = make_app(w).test_client()
    cats = stream_categories(w.database_url, cands)
    online = OnlineFeatures(w)
    moved = 0
    for user in (3, 7, 11):
        body = client.post("/v1/recommend", json={"user_id": user, "candidates": cands, "k": len(cands)}).get_json()
        assert body["model"] == {"name": "ranker", "version": row["version"]}, body
        frame = online.features(user, cands, [cats.get(c) for c in cands])
        mine = dict(zip(cands, scorer.predict(frame, page="live_tab")))
        for it in body["items"]:
            assert it["score"] == pytest.approx(mine[it["stream_id"]], abs=1e-4)
        fixed = dict(zip(cands, fuse(scorer.outputs(frame), DEFAULT_FUSION["default"])))
        moved += max(abs(it["score"] - fixed[it["stream_id"]]) for it in body["items"]) > 1e-3
    assert moved == 3                       # the served score is the network's, not the fixed weights'


def test_fusion_settings_are_checked():
    from store.settings import Settings
    s = Settings.from_env({"STREAMRANK_FUSION": "global", "STREAMRANK_FUSION_UTILITY": "click=1, stay_min=0.2"})
    assert s.fusion == "global" and s.fusion_utility_weights == {"click": 1.0, "stay_min": 0.2}
    assert Settings().fusion == "fixed"
    with pytest.raises(ValueError, match="STREAMRANK_FUSION must be"):
        Settings(fusion="learned")
    for bad in ("click=x", "gmv=1", "click=-1", "click=0"):
        with pytest.raises(ValueError, match="STREAMRANK_FUSION_UTILITY"):
            Settings(fusion_utility=bad)
    assert np.isfinite(list(Settings().fusion_utility_weights.values())).all()

"""The ranker takes the graph job's Metapath2vec versions point in time (ranking.graph_vectors):
no training row sees a version trained on its own outcome; serving uses the ACTIVE graph version
and swaps when the graph job promotes a new one."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ranking.train import TrainConfig

TINY = {"d_model": 8, "n_heads": 2, "n_experts": 2, "expert_dim": 16, "tower_dim": 8}


def test_rows_take_versions_trained_before_them_and_serving_the_active_one(world_factory, make_app):
    from graph.job import train_and_register_embeddings
    from graph.metapath2vec import M2VConfig
    from ranking.job import train_and_register_ranker
    from store.ingest import live_stream_ids, load_events
    from store.registry import active_model, list_models
    w = world_factory("graph-vectors")
    url = w.database_url
    cfg = M2VConfig(dim=8, walk_length=4, context_size=3, walks_per_node=1, epochs=1, negative_pool=8)
    full = train_and_register_embeddings(w, config=cfg)          # the daily job: trained on every event
    # the newest event of the kinds the graph learns from (impressions are not edges: the world's
    # last impressions may come later)
    graph_events = load_events(url, types=["watch", "click", "item_click", "purchase"])
    newest_event = pd.to_datetime(graph_events["ts"], utc=True).max()
    assert pd.Timestamp(full["metrics"]["trained_until"]) == newest_event
    row = train_and_register_ranker(w, ranker_overrides=TINY,
                                    train_config=TrainConfig(epochs=1, batch_size=256, threads=1, seed=0))
    m = row["metrics"]
    gv = m["graph_versions"]
    back = [r for r in list_models(url, "metapath2vec") if r["metrics"].get("backfill")]
    assert len(back) == 1 and back[0]["status"] == "candidate"          # back-filled, never active
    until = {v: pd.Timestamp(t) for v, t in gv["trained_until"].items()}
    assert back[0]["version"] in until                 # (the full version: trained after the rows, not loaded)
    # the version trained on every event is the outcome of every training row: no row takes it
    for part in ("fit", "stop", "valid"):
        assert full["version"] not in gv[part] and sum(gv[part].values()) > 0, (part, gv[part])
    assert "none" not in gv["fit"]                     # rows no version precedes are not trained on
    # every row the job trained on starts after its version's newest event (re-derived from the log)
    from ranking.gbdt import time_split
    from ranking.job import EARLY_STOP_FRAC
    from ranking.samples import impression_labels
    from store.ingest import load_catalog
    labels = impression_labels(load_events(url), load_catalog(url).get("streams"))
    train, _ = time_split(labels, 0.2)
    fit, _ = time_split(train, EARLY_STOP_FRAC)
    fit_ts = pd.to_datetime(fit["ts"], utc=True)
    kept = fit_ts[fit_ts > until[back[0]["version"]]]
    assert gv["fit"] == {back[0]["version"]: len(kept)} == {back[0]["version"]: m["n_train"]}
    assert m["graph_version"] == back[0]["version"]

    # serving: the active graph version's vectors, swapped when the graph job promotes another
    app = make_app(w)
    client = app.test_client()
    cands = live_stream_ids(url, pd.Timestamp.now(tz="UTC").to_pydatetime())[:8]
    body = client.post("/v1/recommend", json={"user_id": 3, "candidates": cands, "k": 8}).get_json()
    assert body["model"] == {"name": "ranker", "version": row["version"], "graph_version": full["version"]}
    second = train_and_register_embeddings(w, config=M2VConfig(dim=8, walk_length=4, context_size=3,
                                                               walks_per_node=1, epochs=2, negative_pool=8), gate=False)
    assert active_model(url, "metapath2vec")["version"] == second["version"] != full["version"]
    body = client.post("/v1/recommend", json={"user_id": 3, "candidates": cands, "k": 8}).get_json()
    assert body["model"] == {"name": "ranker", "version": row["version"], "graph_version": second["version"]}
    from api.runtime import EXTENSION
    from graph.artifacts import Embeddings
    served = app.extensions[EXTENSION].ranker.get()[0].model
    emb = Embeddings.load(second["artifact_path"])
    assert np.allclose(served.inputs.m2v_stream[1:], emb.lookup("stream", served.inputs.streams.ids))
    assert np.allclose(served.inputs.m2v_user[1:], emb.lookup("user", served.inputs.users.ids))


def test_the_ranker_job_takes_an_item_vector_file(world_factory, tmp_path):
    """STREAMRANK_ITEM_VECTORS: the job's ranker carries the file's vectors by item index (a new
    file, a new version); a bad file fails the job with a message before any training."""
    from dataclasses import replace

    import pytest

    from ranking.artifacts import load_ranker
    from ranking.item_vectors import simulator_item_vectors
    from ranking.job import train_and_register_ranker
    from store.ingest import load_catalog
    w = world_factory("item-vectors")
    items = load_catalog(w.database_url)["items"]
    iv = simulator_item_vectors(items, dim=6)
    iv.to_parquet(tmp_path / "items.parquet")
    row = train_and_register_ranker(replace(w, item_vectors=str(tmp_path / "items.parquet")), ranker_overrides=TINY,
                                    train_config=TrainConfig(epochs=1, batch_size=256, threads=1, seed=0))
    model, inputs, _ = load_ranker(row["artifact_path"])
    assert model.config.item_vector_dim == 6
    idx = inputs.items.index(iv["item_id"].to_numpy())
    known = idx > 0
    assert known.sum() > 0.9 * len(iv)
    np.testing.assert_allclose(model.item_vectors.numpy()[idx[known]],
                               iv.drop(columns="item_id").to_numpy()[known], atol=1e-6)
    (tmp_path / "bad.csv").write_text("item_id,v0\n1,0.5\n1,0.7\n")
    with pytest.raises(ValueError, match="repeat"):
        train_and_register_ranker(replace(w, item_vectors=str(tmp_path / "bad.csv")), ranker_overrides=TINY)

import numpy as np
import pytest


def test_embeddings_save_load_lookup(tmp_path):
    from graph.artifacts import Embeddings
    emb = Embeddings(tables={"user": np.arange(6, dtype=np.float32).reshape(3, 2),
                             "stream": np.ones((0, 2), np.float32)},
                     id_maps={"user": np.array([5, 2**40, 2**62]), "stream": np.zeros(0, np.int64)},
                     defaults={"user": [9, 9]}, meta={"x": 1})
    p = emb.save(tmp_path / "v1")
    back = Embeddings.load(p)
    assert np.array_equal(back.tables["user"], emb.tables["user"]) and back.meta == {"x": 1}
    assert np.array_equal(back.id_maps["user"], [5, 2**40, 2**62])
    out = back.lookup("user", [2**62, 7, 5])
    assert out.tolist() == [[4, 5], [9, 9], [0, 1]]
    assert back.lookup("stream", [1]).tolist() == [[0, 0]]
    assert back.score([5], [1]).tolist() == [0.0]
    with pytest.raises(KeyError):
        back.lookup("item", [1])
    with pytest.raises(ValueError):
        Embeddings(tables={"user": np.zeros((2, 2))}, id_maps={"user": np.array([3, 1])})


def test_train_and_register_is_idempotent_and_warm_starts(settings):
    from graph.artifacts import Embeddings, load_active
    from graph.job import train_and_register_embeddings
    from graph.metapath2vec import M2VConfig
    from store.registry import list_models
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate

    data = simulate(SimConfig(seed=4, n_users=60, n_streams=12, n_items=60, days=1, requests_per_day=120))
    half = len(data.events) // 2
    first, rest = data.events.iloc[:half], data.events.iloc[half:]
    data.events = first
    ingest_source(settings, data, progress=False)
    cfg = M2VConfig(dim=8, walk_length=4, context_size=3, walks_per_node=1, epochs=1, negative_pool=8)
    r1 = train_and_register_embeddings(settings, config=cfg)
    assert not r1["skipped"] and r1["status"] == "active"
    r2 = train_and_register_embeddings(settings, config=cfg)
    assert r2["skipped"] and r2["version"] == r1["version"]
    assert len(list_models(settings.database_url, "metapath2vec")) == 1
    emb = load_active(settings.database_url)
    assert emb.dim == 8 and emb.meta["version"] == r1["version"]
    assert set(emb.tables) == {"user", "stream", "item", "category"}
    assert str(settings.artifact_dir / "embeddings") in r1["artifact_path"]

    data.events = rest                                    # new data → a new version, warm-started
    ingest_source(settings, data, progress=False)
    r3 = train_and_register_embeddings(settings, config=cfg, gate=False)     # (the gate: tests/graph/test_gate.py)
    assert not r3["skipped"] and r3["version"] != r1["version"]
    assert r3["metrics"]["warm_start_from"] == r1["version"]
    rows = {m["version"]: m["status"] for m in list_models(settings.database_url, "metapath2vec")}
    assert rows == {r1["version"]: "retired", r3["version"]: "active"}
    assert Embeddings.load(r3["artifact_path"]).meta["warm_start_from"] == r1["version"]

import numpy as np
import pandas as pd
import pytest

from tests.graph._worlds import planted_world

TINY = dict(dim=16, walk_length=6, context_size=3, walks_per_node=2, num_negative_samples=2, epochs=2,
            batch_size=64, negative_pool=16)


@pytest.fixture(scope="module")
def isolated_graph():
    """Planted world + a new stream of a known category, a stream of an unseen category, a catalog
    user with no event, and an item nobody sells (no edge)."""
    from graph.build import build_graph
    ev, cat, _ = planted_world(n_comm=2, users_per=10, streams_per=3, watches=4)
    cat["streams"] = pd.concat([cat["streams"], pd.DataFrame({"stream_id": [1, 2], "category": [100, 999]})])
    cat["users"] = pd.concat([cat["users"], pd.DataFrame({"user_id": [5]})])
    cat["items"] = pd.DataFrame({"item_id": [77], "category": [100]})
    return build_graph(ev, cat)


@pytest.mark.parametrize("loop", ["fast", "reference"])
def test_isolated_nodes_get_finite_defined_embeddings(isolated_graph, loop):
    from graph.build import METAPATHS
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    g = isolated_graph
    # USU and SCS: the new streams are isolated under USU (PyG routes them to its dummy node)
    cfg = M2VConfig(**TINY, loop=loop, metapaths=[METAPATHS["USU"], METAPATHS["SCS"]])
    emb = train_metapath2vec(g, cfg)
    for t, tab in emb.tables.items():
        assert tab.shape == (g.num_nodes[t], 16) and tab.dtype == np.float32
        assert np.isfinite(tab).all(), t
    assert emb.meta["train"]["untrained"]["user"] == 1                 # user 5
    assert emb.meta["train"]["untrained"]["item"] == 1                 # no metapath covers items
    # the lonely user gets the mean of the trained users; unknown ids get the same default
    users = emb.tables["user"]
    trained_users = np.delete(users, emb.index_of("user", [5]), axis=0)
    assert np.allclose(emb.lookup("user", [5])[0], trained_users.mean(0), atol=1e-5)
    assert np.allclose(emb.lookup("user", [424242])[0], emb.defaults["user"])
    assert np.allclose(emb.lookup("item", [77])[0], 0.0)               # a type no walk covers: zeros
    assert emb.lookup("stream", [1, 2]).shape == (2, 16)


def test_category_fallback_for_unreached_streams(isolated_graph):
    from graph.build import METAPATHS
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    g = isolated_graph
    emb = train_metapath2vec(g, M2VConfig(**TINY, metapaths=[METAPATHS["USU"]]))    # no category walks
    assert emb.meta["train"]["untrained"]["stream"] == 2
    s = emb.tables["stream"]
    cats = g.node_category["stream"]
    new = emb.index_of("stream", [1])[0]
    same_cat = [i for i in range(len(s)) if cats[i] == cats[new] and i != new]
    assert np.allclose(s[new], s[same_cat].mean(0), atol=1e-5)        # mean of its category's streams
    other = emb.index_of("stream", [2])[0]                             # category 999: nobody trained there
    assert np.allclose(s[other], emb.defaults["stream"], atol=1e-6)


def test_empty_graph_and_bad_metapaths(isolated_graph):
    from graph.build import build_graph
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    # a log with no edge at all (fresh install): no walk, every row defined (zeros), no crash
    for loop in ("fast", "reference"):
        emb = train_metapath2vec(build_graph(None, {"users": pd.DataFrame({"user_id": [1, 2]})}),
                                 M2VConfig(**TINY, loop=loop))
        assert emb.tables["user"].shape == (2, 16) and not emb.tables["user"].any()
    with pytest.raises(ValueError, match="empty"):
        train_metapath2vec(isolated_graph, M2VConfig(**TINY, metapaths=[]))
    with pytest.raises(ValueError, match="not in the graph"):
        train_metapath2vec(isolated_graph, M2VConfig(**TINY, metapaths=[[("user", "likes", "stream")]]))
    with pytest.raises(ValueError, match="invalid metapath"):
        train_metapath2vec(isolated_graph, M2VConfig(**TINY, metapaths=[
            [("user", "watches", "stream"), ("category", "rev_in", "stream")]]))


def test_warm_start_keeps_existing_ids_close():
    from graph.build import build_graph
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    ev, cat, _ = planted_world(n_comm=3, users_per=20, streams_per=5, watches=8)
    g1 = build_graph(ev, cat)
    cfg = M2VConfig(**{**TINY, "epochs": 4})
    first = train_metapath2vec(g1, cfg)
    # the next day: same graph plus new users and a new stream
    new_u = [10**13 + i for i in range(5)]
    cat2 = {"users": pd.concat([cat["users"], pd.DataFrame({"user_id": new_u})]),
            "streams": pd.concat([cat["streams"], pd.DataFrame({"stream_id": [3], "category": [100]})])}
    ev2 = pd.concat([ev, pd.DataFrame({"user_id": new_u, "stream_id": pd.array([cat["streams"].stream_id.iloc[0]] * 5,
                                                                                dtype="Int64"),
                                       "ts": ev.ts.max(), "type": "watch",
                                       "item_id": pd.array([pd.NA] * 5, dtype="Int64")})], ignore_index=True)
    g2 = build_graph(ev2, cat2)
    again = train_metapath2vec(g2, M2VConfig(**{**TINY, "epochs": 1, "seed": 1}), warm_start=first)
    assert again.meta["train"]["warm_rows"] == sum(len(v) for v in first.id_maps.values())
    for t in ("user", "stream", "category"):
        old = first.tables[t]
        new = again.lookup(t, first.id_maps[t])
        cos = (old * new).sum(1) / (np.linalg.norm(old, axis=1) * np.linalg.norm(new, axis=1))
        assert cos.min() > 0.9, (t, cos.min())
    fresh = again.lookup("user", new_u)
    assert np.isfinite(fresh).all() and not np.allclose(fresh, 0)
    # a cold run of the same graph lands somewhere else entirely
    cold = train_metapath2vec(g2, M2VConfig(**{**TINY, "epochs": 1, "seed": 1}))
    c = cold.lookup("user", first.id_maps["user"])
    old = first.tables["user"]
    cos = (old * c).sum(1) / (np.linalg.norm(old, axis=1) * np.linalg.norm(c, axis=1))
    assert np.median(cos) < 0.5
    with pytest.raises(ValueError, match="dim"):
        train_metapath2vec(g2, M2VConfig(**{**TINY, "dim": 8}), warm_start=first)


def test_fast_loop_learns_planted_communities():
    from graph.evaluate import evaluate_link_prediction
    from graph.metapath2vec import M2VConfig
    ev, cat, _ = planted_world(n_comm=4, users_per=40, streams_per=8, watches=12, seed=3)
    cfg = M2VConfig(dim=32, walk_length=10, context_size=4, walks_per_node=4, epochs=4, negative_pool=32)
    res = evaluate_link_prediction(ev, cat, config=cfg, num_negatives=20)
    rows = {r["model"]: r for r in res["rows"]}
    assert res["split"]["positives"] > 100
    print(rows)
    assert rows["metapath2vec"]["auc"] > 0.7, rows
    assert rows["metapath2vec"]["auc"] > rows["degree_product"]["auc"] + 0.1, rows


def test_reference_loop_runs_on_a_tiny_graph(isolated_graph):
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    emb = train_metapath2vec(isolated_graph, M2VConfig(**{**TINY, "batch_size": 16}, loop="reference"))
    assert emb.meta["train"]["loop"] == "reference" and len(emb.meta["train"]["epochs"]) == 2
    assert all(np.isfinite(t).all() for t in emb.tables.values())


def test_walk_sampler_follows_the_metapath(isolated_graph):
    import torch
    from graph.build import METAPATHS
    from graph.metapath2vec import WalkSampler, _Layout
    g = isolated_graph
    lay = _Layout(g.num_nodes)
    mp = METAPATHS["USCSU"]
    s = WalkSampler(g, lay, mp, walk_length=8)
    gen = torch.Generator().manual_seed(0)
    w = s.sample(s.starts(2, gen), gen)
    assert w.shape == (2 * len(s.active_starts), 9)
    edges = {et: set(map(tuple, g.edge_index(et).t().tolist())) for et in mp}
    for row in w.tolist():
        for i in range(8):
            et = mp[i % len(mp)]
            a, b = row[i], row[i + 1]
            if b < 0:
                break
            assert (a - lay.start[et[0]], b - lay.start[et[2]]) in edges[et]


@pytest.mark.parametrize("loop", ["fast", "reference"])
def test_metapaths_through_empty_relations_and_types(loop):
    """Twitch has no items: a metapath through stream–sells–item (no edge, no item node) must not
    crash either loop (PyG's own sampler raises IndexError on it)."""
    from graph.build import METAPATHS, from_twitch
    from graph.metapath2vec import M2VConfig, train_metapath2vec
    tw = pd.DataFrame({"user_id": [1, 2, 3, 1], "streamer_id": [7, 7, 8, 9], "slot": [0, 1, 2, 3],
                       "community": [3, 3, 4, 4]})
    g = from_twitch(tw)
    assert g.num_nodes["item"] == 0
    cfg = M2VConfig(**TINY, loop=loop, metapaths=[METAPATHS[m] for m in ("USU", "USISU", "UIU", "SIS")])
    emb = train_metapath2vec(g, cfg)
    assert emb.tables["item"].shape == (0, 16)
    assert all(np.isfinite(t).all() for t in emb.tables.values())
    assert emb.meta["train"]["untrained"]["user"] == 0

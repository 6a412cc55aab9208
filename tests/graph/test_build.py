import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_data
from tests.graph._worlds import BASE, planted_world


def test_ids_round_trip_and_new_catalog_nodes(tmp_path):
    from graph.build import (WATCHES, build_graph, load_id_maps, save_id_maps, to_contiguous)
    ev, cat, _ = planted_world(n_comm=2, users_per=5, streams_per=3, watches=3)
    new_stream = 2**62 + 1                               # in the catalog, no event yet
    cat["streams"] = pd.concat([cat["streams"], pd.DataFrame({"stream_id": [new_stream], "category": [100]})])
    cat["users"] = pd.concat([cat["users"], pd.DataFrame({"user_id": [3]})])    # a user with no event
    g = build_graph(ev, cat)
    for t, ids in g.id_maps.items():
        assert ids.dtype == np.int64 and np.all(np.diff(ids) > 0)
        assert np.array_equal(g.id_maps[t][to_contiguous(ids, ids)], ids)
        assert g.data[t].num_nodes == len(ids)
    assert new_stream in set(g.id_maps["stream"]) and 3 in set(g.id_maps["user"])
    # events → contiguous → original ids
    ei = g.edge_index(WATCHES).numpy()
    back = set(zip(g.id_maps["user"][ei[0]], g.id_maps["stream"][ei[1]]))
    assert back == set(zip(ev["user_id"], ev["stream_id"].astype("int64")))
    assert to_contiguous(g.id_maps["user"], [123456789])[0] == -1
    # save / load: exact
    path = save_id_maps(g.id_maps, tmp_path / "maps")
    again = load_id_maps(path)
    assert set(again) == set(g.id_maps)
    for t in again:
        assert again[t].dtype == np.int64 and np.array_equal(again[t], g.id_maps[t])
    assert g.counts["edges"]["user__watches__stream"] == len(back)
    assert int(g.data[WATCHES].count.sum()) == len(ev)
    rev = g.data[("stream", "rev_watches", "user")].edge_index
    assert np.array_equal(rev.numpy(), ei[::-1])


def test_time_window_and_event_types():
    from graph.build import BUYS, CLICKS, SELLS, STREAM_IN, WATCHES, build_graph, default_metapaths
    ev = pd.DataFrame({
        "user_id": [1, 1, 2, 2, 3],
        "ts": [BASE, BASE + pd.Timedelta(hours=1), BASE + pd.Timedelta(hours=2), BASE + pd.Timedelta(hours=3),
               BASE + pd.Timedelta(hours=4)],
        "type": ["watch", "item_click", "purchase", "impression", "click"],
        "stream_id": pd.array([10, 10, 10, 11, 11], dtype="Int64"),
        "item_id": pd.array([None, 100, 100, None, None], dtype="Int64")})
    cat = {"streams": pd.DataFrame({"stream_id": [10, 11, 12], "category": [1, 2, 2]}),
           "items": pd.DataFrame({"item_id": [100, 101], "category": [1, 3]}),
           "stream_items": pd.DataFrame({"stream_id": [10, 12], "item_id": [100, 101]})}
    g = build_graph(ev, cat, end=BASE + pd.Timedelta(hours=4))     # the last click is outside
    assert g.edge_index(WATCHES).shape[1] == 1
    assert g.edge_index(CLICKS).shape[1] == 1 and g.edge_index(BUYS).shape[1] == 1
    assert g.edge_index(SELLS).shape[1] == 2 and g.edge_index(STREAM_IN).shape[1] == 3
    assert list(g.id_maps["category"]) == [1, 2, 3]
    assert g.node_category["stream"].tolist() == [0, 1, 1]
    assert len(default_metapaths(g)) == 9
    liked = build_graph(ev, cat, user_category=True)
    assert liked.edge_index(("user", "likes", "category")).tolist() == [[0, 2], [0, 1]]   # users 1, 3
    assert liked.edge_index(("category", "rev_likes", "user")).shape[1] == 2
    empty = build_graph(None, cat)
    assert empty.num_nodes["stream"] == 3 and empty.edge_index(WATCHES).shape[1] == 0
    assert not any(mp[0] == WATCHES for mp in default_metapaths(empty))


def test_taobao_and_twitch_frames():
    from graph.build import BUYS, CLICKS, ITEM_IN, WATCHES, default_metapaths, from_taobao, from_twitch
    tb = pd.DataFrame([[1, 11, 5, "pv", 1511544070], [1, 12, 5, "buy", 1511544080], [2, 11, 5, "cart", 1511544090],
                       [2, 13, 6, "fav", 1511544099]], columns=["user_id", "item_id", "category", "behavior", "ts"])
    g = from_taobao(tb)
    assert g.edge_index(CLICKS).shape[1] == 3 and g.edge_index(BUYS).shape[1] == 1
    assert g.edge_index(ITEM_IN).shape[1] == 3 and g.num_nodes["stream"] == 0
    names = ["-".join(et[1] for et in mp) for mp in default_metapaths(g)]
    assert names == ["clicks-rev_clicks", "buys-rev_buys", "clicks-in-rev_in-rev_clicks", "in-rev_in"]
    tw = pd.DataFrame({"user_id": [1, 2, 1], "streamer_id": [7, 7, 8], "slot": [0, 1, 2], "community": [3, 3, 4]})
    g = from_twitch(tw)
    assert g.num_nodes == {"user": 2, "stream": 2, "item": 0, "category": 2}
    assert g.edge_index(WATCHES).shape[1] == 3


def test_taobao_sample_file():
    from graph.build import from_taobao
    g = from_taobao(shared_data("taobao_sample", "UserBehavior.csv"))
    assert g.num_nodes["user"] == 43 and g.num_nodes["category"] > 100


def test_metapath_helper():
    from graph.build import metapath
    assert metapath("user", "watches", "stream", "rev_watches", "user") == [
        ("user", "watches", "stream"), ("stream", "rev_watches", "user")]
    with pytest.raises(ValueError):
        metapath("user", "watches")

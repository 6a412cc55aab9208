"""ranking.dataset: vocabularies, dense normalisation, list padding, save/load round trip."""
import numpy as np
import pandas as pd
import pytest

from ranking.dataset import RankerInputs, Vocab, labels


def _frame(n=6):
    return pd.DataFrame({
        "user_id": [10, 11, 10, 12, 13, 10][:n], "stream_id": [100, 101, 102, 100, 101, 999][:n],
        "category": [1, 2, 1, 1, 2, 3][:n],
        "a": [0.0, 1.0, 10.0, np.nan, 100.0, 5.0][:n], "b": [-3.0, 0.0, 3.0, 1.0, 2.0, 0.0][:n],
        "recent_items": [[5, 6], None, [7], [], [5, 6, 7, 8], [9]][:n],
        "recent_streams": [[101], [], None, [100, 102], [999], [100]][:n],
        "rt_items": [[5], [6], [], None, [7], [5]][:n],
        "position": [1, 2, 3, None, 5, 1][:n], "page": ["live_tab", "home", "live_tab", None, "x", "home"][:n],
        "click": [1, 0, 0, 1, 0, 1][:n], "purchase": [1, 0, 0, 0, 0, 0][:n], "stay_s": [30.0, 0, 0, 5.0, 0, 0][:n],
    })


def test_vocab_unknown_is_zero_and_ids_contiguous():
    v = Vocab([30, 10, 20, 10])
    assert len(v) == 4
    assert v.index([10, 20, 30, 40, -1]).tolist() == [1, 2, 3, 0, 0]
    assert Vocab([]).index([1, 2]).tolist() == [0, 0]


def test_transform_shapes_padding_and_normalisation():
    f = _frame()
    catalog = {"streams": pd.DataFrame({"stream_id": [100, 101, 102, 103], "category": [1, 2, 1, 4]}),
               "stream_items": pd.DataFrame({"stream_id": [100, 100, 103], "item_id": [5, 50, 51],
                                             "is_core": [True, False, True]})}
    inp = RankerInputs.fit(f.iloc[:5], ["a", "b"], catalog=catalog, lengths={"user_items": 3})
    x = inp.transform(f)
    assert x["dense"].shape == (6, 2) and x["dense"].dtype == np.float32
    assert np.isfinite(x["dense"]).all() and np.abs(x["dense"]).max() <= 5.0
    # standardised on the train rows (the 5 first): mean ~0 for the non-missing ones
    assert abs(float(x["dense"][:5, 1].mean())) < 1e-6
    assert x["dense"][3, 0] == 0.0                                    # missing -> the train mean
    assert x["user_items"].shape == (6, 3)
    assert (x["user_items"][4] > 0).all()                             # truncated to 3, most recent first
    assert x["user_items"][4].tolist() == inp.items.index([5, 6, 7]).tolist()
    assert x["user_items"][1].tolist() == [0, 0, 0]                   # None -> all padding
    assert x["user_streams"][3, :2].tolist() == inp.streams.index([100, 102]).tolist()
    assert x["stream_id"][5] == inp.streams.index([999])[0] != 0      # seen in a list -> in the vocab
    assert x["user_id"][5] == inp.users.index([10])[0]
    # core products from the catalog (stream 103 never shown still has them)
    s103 = inp.streams.index([103])[0]
    assert inp.core_items[s103, 0] == inp.items.index([51])[0]
    assert x["core_items"][0, 0] == inp.items.index([5])[0] and x["core_items"][0, 1] == 0   # 50 is not core
    assert x["position"].tolist() == [1, 2, 3, 0, 5, 1]
    assert x["page"][3] == 0 and x["page"][0] == inp.page_index("live_tab") > 0
    assert x["category"].tolist()[:2] == inp.categories.index([1, 2]).tolist()


def test_time_gaps_of_the_recent_streams_in_training_and_serving_frames():
    """user_streams_dt: seconds from each recent stream's time to the row's instant — ``ts`` in a
    training frame, ``as_of`` on the request path (feature_repo.online.assemble_columns) — truncated
    like the id list, 0 where padded; absent without recent_stream_ts."""
    from feature_repo.columns import Columns
    f = _frame()
    t0 = pd.Timestamp("2026-01-01T12:00:00Z")
    f["ts"] = [t0 + pd.Timedelta(seconds=s) for s in range(6)]
    base = int(t0.timestamp())
    f["recent_stream_ts"] = [[base - 60], [], None, [base - 10, base - 3600], [base - 86400], [base + 100]]
    inp = RankerInputs.fit(f, ["a", "b"], lengths={"user_streams": 1})
    x = inp.transform(f)
    assert x["user_streams_dt"].shape == (6, 1) and x["user_streams_dt"].dtype == np.float32
    assert x["user_streams_dt"][:, 0].tolist() == [60.0, 0.0, 0.0, 13.0, 86404.0, 0.0]   # truncated to 1; future -> 0
    assert "user_streams_dt" not in inp.transform(f.drop(columns=["recent_stream_ts"]))
    # the request path: one instant for every row, the user's list shared by the candidates
    shared = [base - 120, base - 7200]
    cols = Columns({"user_id": np.full(3, 10), "stream_id": np.array([100, 101, 102]), "category": np.ones(3, int),
                    "a": np.zeros(3), "b": np.zeros(3), "recent_stream_ts": np.array([shared] * 3 + [None], dtype=object)[:3],
                    "recent_streams": np.array([[101, 100]] * 3 + [None], dtype=object)[:3],
                    "as_of": np.full(3, float(base))}, 3)
    inp2 = RankerInputs.fit(f, ["a", "b"])
    assert inp2.transform(cols, with_position=False)["user_streams_dt"][:, :3].tolist() == [[120.0, 7200.0, 0.0]] * 3


def test_save_load_round_trip(tmp_path):
    f = _frame()
    inp = RankerInputs.fit(f, ["a", "b"])
    inp.save(tmp_path / "v")
    back = RankerInputs.load(tmp_path / "v")
    a, b = inp.transform(f), back.transform(f)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_labels():
    y = labels(_frame())
    assert y["click"].tolist() == [1, 0, 0, 1, 0, 1]
    assert y["purchase"].tolist() == [1, 0, 0, 0, 0, 0]
    assert y["stay"][0] == pytest.approx(np.log1p(30.0))

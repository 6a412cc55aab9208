"""ranking.item_vectors: the item vector file formats, the table by item index, and the ranker
option (RankerConfig.item_vector_dim): the vectors change the output, the serving form and a
saved / loaded version score as the trained model."""
import numpy as np
import pandas as pd
import pytest

from ranking.item_vectors import item_table, read_item_vectors, simulator_item_vectors
from tests.ranking.test_dataset import _frame

torch = pytest.importorskip("torch")

TINY = {"d_model": 8, "n_heads": 2, "n_experts": 2, "expert_dim": 16, "tower_dim": 8, "use_biasnet": False,
        "dropout": 0.0}


def test_files_round_trip_and_bad_files_say_what_is_wrong(tmp_path):
    ids = np.array([9, 5, 7])
    vec = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.savez(tmp_path / "v.npz", item_id=ids, vector=vec)
    df = pd.DataFrame({"item_id": ids, "a": vec[:, 0], "b": vec[:, 1]})
    df.to_parquet(tmp_path / "v.parquet")
    df.to_csv(tmp_path / "v.csv", index=False)
    for name in ("v.npz", "v.parquet", "v.csv"):
        i, v = read_item_vectors(tmp_path / name)
        assert i.tolist() == [9, 5, 7] and np.array_equal(v, vec), name
    for bad, msg in [(df.drop(columns="item_id"), "no item_id"), (pd.concat([df, df]), "repeat"),
                     (df.assign(a=[np.nan, 1, 2]), "NaN")]:
        bad.to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(ValueError, match=msg):
            read_item_vectors(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="does not exist"):
        read_item_vectors(tmp_path / "none.npz")
    (tmp_path / "v.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.npz, \.parquet or \.csv"):
        read_item_vectors(tmp_path / "v.txt")
    # by item index: row 0 padding, items the file lacks are zeros
    table = item_table(np.array([5, 6, 9]), ids, vec)
    assert table.tolist() == [[0, 0], [2, 3], [0, 0], [0, 1]]


def test_the_simulator_writes_vectors_that_tell_categories_apart():
    items = pd.DataFrame({"item_id": np.arange(1, 201), "category": np.repeat([1, 2], 100),
                          "price": np.linspace(5, 100, 200)})
    v = simulator_item_vectors(items, dim=8, noise=0.1, seed=0)
    assert list(v.columns) == ["item_id"] + [f"v{i}" for i in range(8)] and len(v) == 200
    x = v.drop(columns="item_id").to_numpy()
    within = np.linalg.norm(x[:100] - x[:100].mean(0), axis=1).mean()
    between = np.linalg.norm(x[:100].mean(0) - x[100:].mean(0))
    assert between > 2 * within


def test_item_vectors_enter_the_tokens_and_serve_as_trained(tmp_path):
    from ranking.artifacts import save_ranker
    from ranking.batches import to_tensors
    from ranking.dataset import RankerInputs
    from ranking.scorer import RankerScorer
    from ranking.train import build_ranker
    f = _frame()
    ids = np.array([5, 6, 7, 8, 9])
    vec = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    inputs = RankerInputs.fit(f, ["a", "b"], item_vectors=(ids, vec))
    assert inputs.config_sizes()["item_vector_dim"] == 4
    model = build_ranker(inputs, **TINY)
    model.set_item_vectors(inputs.item_vectors)
    assert np.array_equal(model.item_vectors.numpy()[inputs.items.index(ids)], vec)
    model.eval()
    with torch.no_grad():
        ref = model(to_tensors(inputs.transform(f)))["ctr_logit"].double().numpy()
        # the vectors are an input: other vectors, other scores (rows with items in their lists)
        model.set_item_vectors(inputs.item_vectors * -3.0)
        moved = model(to_tensors(inputs.transform(f)))["ctr_logit"].double().numpy()
        model.set_item_vectors(inputs.item_vectors)
    assert np.abs(moved - ref).max() > 1e-4
    # the scorer caches a stream's candidate tokens per request: rows of distinct streams
    one = [0, 1, 2, 5]
    p_ref = 1 / (1 + np.exp(-ref[one]))
    np.testing.assert_allclose(RankerScorer.from_trained(model, inputs).outputs(f.iloc[one])["p_ctr"], p_ref,
                               atol=1e-6)
    back = RankerScorer.load(save_ranker(model, inputs, tmp_path / "iv"))
    assert np.array_equal(back.inputs.item_vectors, inputs.item_vectors)
    np.testing.assert_allclose(back.outputs(f.iloc[one])["p_ctr"], p_ref, atol=1e-6)
    with pytest.raises(ValueError, match="item vectors"):
        model.set_item_vectors(np.zeros((2, 4)))

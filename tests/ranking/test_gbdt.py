"""ranking.gbdt: training on a planted signal, leaf encoding, save/load, weights, the training job."""
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from ranking.gbdt import GBDTModel, LeafEncoder, sample_weight, time_split, train_gbdt
from ranking.metrics import auc

COLS = ["f0", "f1", "f2", "noise"]


def planted(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[rng.random(n) < 0.05, 2] = np.nan                 # missing values are allowed
    logit = 1.8 * X[:, 0] - 1.2 * X[:, 1] + 0.8 * (np.nan_to_num(X[:, 2]) > 0.5) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    df = pd.DataFrame(X, columns=COLS)
    df["click"] = y
    df["user_id"] = rng.integers(0, 50, n)
    df["ts"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s")
    return df


@pytest.fixture(scope="module")
def trained():
    df = planted()
    train, valid = time_split(df, 0.25)
    model = train_gbdt(train, valid, COLS, params={"num_leaves": 15, "min_data_in_leaf": 20},
                       num_boost_round=120, early_stopping=15)
    return model, valid


def test_planted_signal_is_learned(trained):
    model, valid = trained
    p = model.predict(valid)
    assert p.shape == (len(valid),) and ((p > 0) & (p < 1)).all()
    assert auc(valid["click"], p) > 0.8
    assert 1 <= model.num_trees <= 120
    imp = model.feature_importance()
    assert max(imp, key=imp.get) in ("f0", "f1") and imp["noise"] < imp["f0"]


def test_leaf_encoder_ids_and_save_load_round_trip(trained, tmp_path):
    model, valid = trained
    enc = LeafEncoder(model)
    ids = enc.transform(valid)
    nl = 15
    assert ids.dtype == np.int64 and ids.shape == (len(valid), model.num_trees)
    assert enc.n_tokens == model.num_trees * nl
    lo = np.arange(model.num_trees) * nl
    assert (ids >= lo).all() and (ids < lo + nl).all()
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.txt").exists() and (tmp_path / "m" / "meta.json").exists()
    back = GBDTModel.load(tmp_path / "m")
    assert back.feature_cols == COLS and back.num_leaves == nl and back.num_trees == model.num_trees
    np.testing.assert_array_equal(LeafEncoder(back).transform(valid), ids)
    np.testing.assert_allclose(back.predict(valid), model.predict(valid), rtol=0, atol=1e-12)
    # columns are taken by name: order and extra columns in the frame do not matter
    shuffled = valid[["noise", "click", "f2", "f1", "f0"]]
    np.testing.assert_allclose(back.predict(shuffled), model.predict(valid), atol=1e-12)
    assert back.predict(valid.iloc[:0]).shape == (0,)


def test_sample_weight_monotone():
    click = np.array([0, 1, 1, 1, 1, 1])
    purchase = np.array([0, 0, 0, 0, 1, 1])
    stay = np.array([500.0, 0.0, 30.0, 300.0, 30.0, 300.0])
    w = sample_weight(click, purchase, stay)
    assert w[0] == 1.0                       # no click: stay and purchase do not count
    assert w[1] == 1.0 and w[1] < w[2] < w[3]         # longer stay weighs more
    assert w[4] > w[2] and w[5] > w[3]       # a purchase weighs more
    assert np.all(w >= 1.0)
    # monotone in stay on a grid (fixed reference) and capped
    grid = np.linspace(0, 1e6, 200)
    wg = sample_weight(np.ones(200), np.zeros(200), grid, stay_ref=60.0)
    assert np.all(np.diff(wg) >= 0) and wg.max() <= 1 + 3.0 + 1e-12
    frame = pd.DataFrame({"click": click, "purchase": purchase, "stay_s": stay})
    np.testing.assert_array_equal(sample_weight(frame), w)


def test_time_split_is_by_time():
    df = planted(100).sample(frac=1.0, random_state=0)
    df.loc[df.index[:10], "ts"] = df["ts"].max()          # a block of equal instants
    tr, va = time_split(df, 0.2)
    assert len(tr) + len(va) == 100 and len(va) >= 20
    assert tr["ts"].max() < va["ts"].min()


# ----------------------------------------------------------------------------- the training job
END = datetime(2026, 3, 2, 0, tzinfo=timezone.utc)


def test_train_and_register_on_the_simulator(tmp_path):
    from feature_repo.statistics_job import run_statistics
    from ranking.gbdt import train_and_register
    from store.registry import active_model, list_models
    from store.settings import Settings
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate

    settings = Settings(home=tmp_path / "var").ensure_dirs()
    ingest_source(settings, simulate(SimConfig(seed=3, n_users=300, n_streams=30, n_items=200, days=4, end=END,
                                               requests_per_day=700)), progress=False)
    run_statistics(settings, end=END, progress=False)
    row = train_and_register(settings, end=END)
    m = row["metrics"]
    assert row["status"] == "active" and row["name"] == "gbdt"
    for k in ("auc", "gauc", "logloss", "n", "popularity_auc", "oracle_auc"):
        assert k in m, k
    assert m["auc"] > 0.55 and m["auc"] > m["popularity_auc"]
    assert m["oracle_auc"] >= m["auc"] - 0.05
    model = GBDTModel.load(row["artifact_path"])
    from feature_repo.features import FEATURE_COLUMNS
    assert model.feature_cols == list(FEATURE_COLUMNS)
    again = train_and_register(settings, end=END)            # same data version: no retraining
    assert again["version"] == row["version"]
    assert len(list_models(settings.database_url, "gbdt")) == 1
    assert active_model(settings.database_url, "gbdt")["version"] == row["version"]


def test_weighted_training_is_corrected_back_to_the_base_rate(tmp_path):
    df = planted(3000, seed=1)
    rng = np.random.default_rng(5)          # value independent of the features: the prior correction is exact
    df["purchase"] = ((df["click"] == 1) & (rng.random(len(df)) < 0.3)).astype(int)
    df["stay_s"] = np.where(df["click"] == 1, 60.0, 0.0)
    w = sample_weight(df)
    m = train_gbdt(df, None, COLS, weight=w, params={"num_leaves": 7}, num_boost_round=40)
    assert m.odds_scale == pytest.approx(w[df.click == 1].mean() / w[df.click == 0].mean())
    raw, p = m.predict_raw(df), m.predict(df)
    assert raw.mean() > df["click"].mean() + 0.05                 # weights inflate the raw probabilities
    assert abs(p.mean() - df["click"].mean()) < 0.03
    assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(p, kind="stable"))   # monotone
    m.save(tmp_path / "w")
    np.testing.assert_allclose(GBDTModel.load(tmp_path / "w").predict(df), p, atol=1e-12)


def test_head_to_head_compares_both_versions_on_the_same_new_rows(trained, tmp_path):
    """The promotion gate scores the active version on the NEW window: a new model whose own
    metric beats the active's stale one (measured on an older, harder window) but which is worse
    on the same rows stays a candidate; a better one replaces it; a broken active is replaced."""
    from ranking.gbdt import MIN_HEAD_TO_HEAD_ROWS, head_to_head
    good, valid = trained
    good.save(tmp_path / "good")
    df = planted(seed=1)
    weak = train_gbdt(df, None, ["noise", "f2"], num_boost_round=20)       # blind to f0, f1
    assert auc(valid.click, weak.predict(valid)) < auc(valid.click, good.predict(valid)) - 0.1
    stale = {"version": "v-good", "artifact_path": str(tmp_path / "good"), "metrics": {"auc": 0.51}}
    ok, why, versus = head_to_head(weak, valid, stale)
    assert not ok and "same" in why and versus["active_auc"] > versus["auc"] and versus["n"] == len(valid)
    weak.save(tmp_path / "weak")
    ok, _, versus = head_to_head(good, valid, {"version": "v-weak", "artifact_path": str(tmp_path / "weak"),
                                               "metrics": {"auc": 0.99}})
    assert ok and versus["auc"] > versus["active_auc"]
    # rows before the active version's own validation window are left out (it may have trained on them)
    since = valid.ts.iloc[len(valid) - MIN_HEAD_TO_HEAD_ROWS - 5].isoformat()
    _, _, versus = head_to_head(weak, valid, dict(stale, metrics={"auc": 0.5, "valid_from": since}))
    assert versus["n"] == MIN_HEAD_TO_HEAD_ROWS + 5
    ok, why, _ = head_to_head(weak, valid, dict(stale, artifact_path=str(tmp_path / "missing")))
    assert ok and "cannot be loaded" in why
    assert head_to_head(weak, valid, None)[0]

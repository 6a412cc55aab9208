"""Data sources: simulator (determinism, planted truth), Twitch, OBD, events file, ingest."""
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from store.sources import EVENT_COLUMNS, SourceData, ingest_source
from store.sources.events_file import load_events_file
from store.sources.obd import load_obd, user_key
from store.sources.simulator import EXAMINATION, SimConfig, examination, simulate
from store.sources.twitch import load_twitch

from tests.conftest import shared_data  # noqa: E402  (skipped when ../shared is absent, except on CI)

END = datetime(2026, 1, 15, tzinfo=timezone.utc)
SMALL = dict(n_users=300, n_streams=40, n_items=300, days=3, requests_per_day=400, end=END)
FOLLOW_UPS = ("click", "watch", "item_click", "purchase")


def auc(y, s) -> float:
    """ROC AUC with ties averaged (numpy only)."""
    y = np.asarray(y, dtype=bool)
    r = pd.Series(np.asarray(s, dtype=float)).rank().to_numpy()
    n1, n0 = y.sum(), (~y).sum()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def labelled_impressions(data: SourceData) -> pd.DataFrame:
    ev = data.events
    imp = ev[ev["type"] == "impression"]
    clk = ev[ev["type"] == "click"][["request_id", "stream_id"]].assign(click=1)
    out = imp.merge(clk, on=["request_id", "stream_id"], how="left").fillna({"click": 0})
    if data.truth is not None:
        out = out.merge(data.truth, on="event_id", how="left", validate="one_to_one")
    return out


@pytest.fixture(scope="module")
def small():
    return simulate(SimConfig(seed=0, **SMALL))


def assert_contract(data: SourceData):
    ev = data.events
    assert list(ev.columns) == EVENT_COLUMNS
    assert str(ev["ts"].dtype) == "datetime64[us, UTC]"
    assert ev["user_id"].dtype == np.int64
    for c in ("stream_id", "item_id", "position"):
        assert str(ev[c].dtype) == "Int64", c
    assert ev["event_id"].is_unique
    assert set(ev["type"]) <= {"impression", "click", "watch", "item_click", "purchase"}
    assert list(data.streams.columns) == ["stream_id", "streamer_id", "category", "created_at"]
    assert list(data.live_windows.columns) == ["stream_id", "start_ts", "end_ts"]
    assert (data.live_windows["end_ts"] > data.live_windows["start_ts"]).all()
    assert set(ev["stream_id"].dropna()) <= set(data.streams["stream_id"])
    assert set(ev["item_id"].dropna()) <= set(data.items["item_id"])


# ----------------------------------------------------------------------------- simulator
def test_event_columns_match_ingest():
    from store import ingest
    assert EVENT_COLUMNS == ingest.EVENT_COLUMNS


def test_examination_curve():
    assert examination(1) == 1.0
    assert len(EXAMINATION) == 10 and np.all(np.diff(EXAMINATION) < 0)
    assert np.allclose(examination(np.arange(1, 11)), EXAMINATION)
    with pytest.raises(ValueError):
        examination(0)


def test_simulator_deterministic_by_seed(small):
    again = simulate(SimConfig(seed=0, **SMALL))
    for name in ("users", "items", "streams", "stream_items", "live_windows", "events", "truth"):
        pd.testing.assert_frame_equal(getattr(small, name), getattr(again, name), obj=name)
    other = simulate(SimConfig(seed=1, **SMALL))
    assert not other.events[["user_id", "stream_id", "ts"]].equals(small.events[["user_id", "stream_id", "ts"]])
    assert not np.allclose(other.truth["relevance"].head(100), small.truth["relevance"].head(100))


def test_simulator_contract(small):
    assert_contract(small)
    ev, cfg = small.events, small.meta["config"]
    start, end = pd.Timestamp(small.meta["start"]), pd.Timestamp(END)
    assert ev["ts"].min() >= start and ev["ts"].max() < end
    # live windows reach into the future, and a good share of streams is live at `end`
    lw = small.live_windows
    live_now = lw[(lw["start_ts"] <= end) & (lw["end_ts"] > end)]["stream_id"].nunique()
    assert lw["end_ts"].max() > end + pd.Timedelta(hours=24)
    assert 0.15 * cfg.n_streams <= live_now <= 0.75 * cfg.n_streams
    # impressions: positions 1..k unique per request, streams live at the impression time
    imp = ev[ev["type"] == "impression"]
    assert imp["position"].notna().all() and imp["request_id"].notna().all()
    assert imp["position"].between(1, cfg.slate_size).all()
    assert not imp.duplicated(["request_id", "position"]).any()
    assert not imp.duplicated(["request_id", "stream_id"]).any()
    j = imp.merge(lw, on="stream_id")
    covered = j[(j["start_ts"] <= j["ts"]) & (j["ts"] < j["end_ts"])]["event_id"].nunique()
    assert covered == len(imp)
    # every follow-up matches an impression (request, stream, position) that happened before it
    fu = ev[ev["type"].isin(FOLLOW_UPS)]
    m = fu.merge(imp[["request_id", "stream_id", "position", "ts"]], on=["request_id", "stream_id"],
                 how="left", suffixes=("", "_imp"), validate="many_to_one")
    assert m["ts_imp"].notna().all()
    assert (m["position"] == m["position_imp"]).all()
    assert (m["ts"] > m["ts_imp"]).all()
    # purchases: item sold by the stream, value = price; watch seconds >= 0
    buy = ev[ev["type"] == "purchase"].merge(small.items, on="item_id")
    assert len(buy) > 0 and np.allclose(buy["value"], buy["price"])
    sold = set(map(tuple, small.stream_items[["stream_id", "item_id"]].to_numpy()))
    ic = ev[ev["type"].isin(["item_click", "purchase"])]
    assert all((int(s), int(i)) in sold for s, i in zip(ic["stream_id"], ic["item_id"]))
    assert (ev.loc[ev["type"] == "watch", "value"] >= 0).all()
    assert (ev["type"] == "watch").sum() == (ev["type"] == "click").sum()
    # truth: one row per impression, p_click = examination * relevance
    tr = small.truth
    assert set(tr["event_id"]) == set(imp["event_id"])
    assert np.allclose(tr["p_click"], tr["examination"] * tr["relevance"])
    assert tr[["p_click", "p_purchase", "relevance"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (tr["mean_stay_s"] > 0).all()
    # items and stream_items
    per_stream = small.stream_items.groupby("stream_id").size()
    assert per_stream.between(*cfg.items_per_stream).all()
    assert small.stream_items.groupby("stream_id")["is_core"].any().all()


def test_simulator_click_rates_and_oracle(small):
    imp = labelled_impressions(small)
    ctr = imp["click"].mean()
    assert 0.05 <= ctr <= 0.2
    # truth is calibrated
    assert abs(imp["p_click"].mean() - ctr) < 0.02
    # oracle beats a popularity baseline (the stream's CTR): a learned model has room
    popularity = imp.groupby("stream_id")["click"].transform("mean")
    a_oracle, a_pop = auc(imp["click"], imp["p_click"]), auc(imp["click"], popularity)
    assert a_oracle > a_pop + 0.08, (a_oracle, a_pop)
    # relevance alone (no position) also beats popularity
    assert auc(imp["click"], imp["relevance"]) > a_pop + 0.05
    # user history matters: earlier clicks on the stream raise the click rate
    imp = imp.sort_values("ts", kind="stable")
    prev = imp.groupby(["user_id", "stream_id"])["click"].cumsum() - imp["click"]
    assert imp.loc[prev > 0, "click"].mean() > 1.5 * imp.loc[prev == 0, "click"].mean()
    # purchases and stay depend on relevance
    ev = small.events
    clicked = imp[imp["click"] == 1]
    assert 0.03 < (ev["type"] == "purchase").sum() / len(clicked) < 0.4
    assert np.corrcoef(imp["relevance"], np.log(imp["mean_stay_s"]))[0, 1] > 0.5
    assert np.corrcoef(imp["relevance"], imp["p_purchase"])[0, 1] > 0.5


def test_examination_recoverable_from_randomised_part():
    data = simulate(SimConfig(seed=3, n_users=400, n_streams=60, n_items=400, days=2, requests_per_day=5000,
                              explore_rate=0.5, end=END))
    imp = labelled_impressions(data)
    rnd = imp[imp["randomized"]]
    assert 0.4 < imp.drop_duplicates("request_id")["randomized"].mean() < 0.6
    ctr = rnd.groupby("position")["click"].mean()
    ratio = (ctr / ctr.iloc[0]).to_numpy()
    assert np.all(np.abs(ratio / EXAMINATION - 1) < 0.2), np.round(ratio / EXAMINATION, 3)
    slope = -np.polyfit(np.log(ctr.index.to_numpy(float)), np.log(ctr.to_numpy()), 1)[0]
    assert abs(slope - 0.7) < 0.08, slope
    # the ranked (logging-policy) part confounds position with relevance: its naive curve is steeper
    ranked = imp[~imp["randomized"]].groupby("position")["click"].mean()
    naive = -np.polyfit(np.log(ranked.index.to_numpy(float)), np.log(ranked.to_numpy()), 1)[0]
    assert naive > slope + 0.1


def test_simulator_default_end_is_now_floored():
    d = simulate(SimConfig(n_users=50, n_streams=10, n_items=40, days=1, requests_per_day=50))
    end = d.meta["end"]
    assert end.tzinfo is not None and end.minute == 0 and end.second == 0
    assert abs((datetime.now(timezone.utc) - end).total_seconds()) < 3700


# ----------------------------------------------------------------------------- twitch
@pytest.fixture(scope="module")
def twitch_slice(tmp_path_factory):
    src = shared_data("twitch", "watches.csv")
    df = pd.read_csv(src, nrows=2000)
    df = pd.concat([df, df.head(5)])                       # duplicate rows are dropped
    path = tmp_path_factory.mktemp("twitch") / "watches.csv"
    df.to_csv(path, index=False)
    return path, df.drop_duplicates()


def test_twitch_loader(twitch_slice):
    path, df = twitch_slice
    data = load_twitch(path)
    assert_contract(data)
    ev = data.events
    assert (ev["type"] == "watch").all() and len(ev) == len(df)
    assert (ev["value"] == 600.0).all()
    assert ev["event_id"].iloc[0].startswith("tw-")
    assert set(data.streams["stream_id"]) == set(df["streamer_id"])
    assert (data.streams["stream_id"] == data.streams["streamer_id"]).all()
    cat = data.streams.set_index("stream_id")["category"]
    assert (cat.loc[df["streamer_id"]].to_numpy() == df["community"].to_numpy()).all()
    assert set(data.users["user_id"]) == set(df["user_id"])
    assert ev["ts"].min() == pd.Timestamp("2020-01-01", tz="UTC")
    # live windows cover every watch, are maximal runs, and don't overlap
    lw = data.live_windows
    j = ev.merge(lw, on="stream_id")
    covered = j[(j["start_ts"] <= j["ts"]) & (j["ts"] < j["end_ts"])]["event_id"].nunique()
    assert covered == len(ev)
    lw = lw.sort_values(["stream_id", "start_ts"])
    same = lw["stream_id"].eq(lw["stream_id"].shift())
    assert (lw["start_ts"][same] > lw["end_ts"].shift()[same]).all()       # gap between runs
    n_slots = ((lw["end_ts"] - lw["start_ts"]) / pd.Timedelta(minutes=10)).sum()
    assert n_slots == df[["streamer_id", "slot"]].drop_duplicates().shape[0]


def test_twitch_impressions_optional(twitch_slice):
    path, df = twitch_slice
    data = load_twitch(path, impressions=True, slot_minutes=5)
    assert_contract(data)
    ev = data.events
    imp, clk = ev[ev["type"] == "impression"], ev[ev["type"] == "click"]
    assert imp["position"].isna().all()
    live_per_slot = df.drop_duplicates(["slot", "streamer_id"]).groupby("slot").size()
    req = df.drop_duplicates(["user_id", "slot"])
    assert len(imp) == live_per_slot.loc[req["slot"]].sum()
    assert len(clk) == len(df) == (ev["type"] == "watch").sum()
    m = clk.merge(imp, on=["request_id", "stream_id"], how="left", suffixes=("", "_imp"))
    assert m["event_id_imp"].notna().all()
    assert (ev.loc[ev["type"] == "watch", "value"] == 300.0).all()


# ----------------------------------------------------------------------------- OBD
def test_obd_loader():
    folder = shared_data("obd", "random", "all")
    data = load_obd(folder)
    assert_contract(data)
    raw = pd.read_csv(folder / "all.csv", usecols=["item_id", "position", "click"] + [f"user_feature_{i}" for i in range(4)])
    ev = data.events
    imp, clk = ev[ev["type"] == "impression"], ev[ev["type"] == "click"]
    assert len(imp) == 10_000 and len(clk) == int(raw["click"].sum()) > 0
    assert set(imp["position"]) == {1, 2, 3}
    assert imp["request_id"].is_unique
    m = clk.merge(imp, on=["request_id", "stream_id", "position"], how="left", suffixes=("", "_imp"))
    assert m["event_id_imp"].notna().all() and (m["ts"] > m["ts_imp"]).all()
    assert len(data.streams) == 80 and data.streams["category"].between(0, 20).all()
    lw = data.live_windows
    assert len(lw) == len(data.streams)
    assert lw["start_ts"].min() <= ev["ts"].min() and lw["end_ts"].max() > ev["ts"].max()
    r0 = raw.iloc[0]
    assert imp["user_id"].iloc[0] == user_key(*(r0[f"user_feature_{i}"] for i in range(4)))
    assert imp["user_id"].nunique() == raw[[f"user_feature_{i}" for i in range(4)]].drop_duplicates().shape[0]
    assert len(data.meta["propensity"]) == 10_000


# ----------------------------------------------------------------------------- events file
def test_events_file_round_trip(tmp_path, small):
    ev = small.events.iloc[:3000]
    csv = tmp_path / "events.csv"
    out = ev.copy()
    out["ts"] = out["ts"].map(lambda t: t.isoformat())
    out.to_csv(csv, index=False)
    data = load_events_file(csv)
    assert_contract(data)
    pd.testing.assert_frame_equal(data.events, ev.reset_index(drop=True), check_dtype=False)
    assert data.events.dtypes.equals(ev.dtypes)
    # derived catalog: every referenced stream/item, a live window per stream covering its events
    assert set(data.streams["stream_id"]) == set(ev["stream_id"].dropna())
    assert set(data.items["item_id"]) == set(ev["item_id"].dropna())
    assert (data.streams["category"] == 0).all()
    j = ev.merge(data.live_windows, on="stream_id")
    assert ((j["start_ts"] <= j["ts"]) & (j["ts"] < j["end_ts"])).all()

    # parquet + a catalog folder (parquet and csv mixed; users attributes as JSON text)
    pq = tmp_path / "events.parquet"
    ev.drop(columns=["page", "item_id"]).to_parquet(pq, index=False)
    cat = tmp_path / "catalog"
    cat.mkdir()
    small.streams.to_parquet(cat / "streams.parquet", index=False)
    small.items.to_csv(cat / "items.csv", index=False)
    small.live_windows.to_parquet(cat / "live_windows.parquet", index=False)
    pd.DataFrame({"user_id": [1, 2], "attributes": ['{"tier": 1}', None]}).to_csv(cat / "users.csv", index=False)
    data2 = load_events_file(pq, catalog_dir=cat)
    assert data2.events["page"].isna().all() and data2.events["item_id"].isna().all()
    pd.testing.assert_frame_equal(data2.streams, small.streams)
    pd.testing.assert_frame_equal(data2.items, small.items)
    pd.testing.assert_frame_equal(data2.live_windows, small.live_windows)
    assert data2.users["attributes"].tolist() == [{"tier": 1}, None]
    assert len(data2.stream_items) == 0


def test_events_file_missing_columns(tmp_path):
    p = tmp_path / "bad.csv"
    pd.DataFrame({"event_id": ["a"], "stream_id": [1]}).to_csv(p, index=False)
    with pytest.raises(ValueError) as exc:
        load_events_file(p)
    assert "user_id" in str(exc.value) and "ts" in str(exc.value) and "type" in str(exc.value)
    p2 = tmp_path / "bad2.csv"
    pd.DataFrame({"event_id": ["a", "b", "c"], "user_id": [1, 2, 3], "ts": ["2026-01-01T00:00:00Z"] * 3,
                  "type": ["impression"] * 3, "stream_id": ["1", "x", "2.5"]}).to_csv(p2, index=False)
    with pytest.raises(ValueError, match=r"stream_id.*\[1, 2\]"):
        load_events_file(p2)
    q = tmp_path / "events.txt"
    q.write_text("x")
    with pytest.raises(ValueError):
        load_events_file(q)


# ----------------------------------------------------------------------------- ingest
def test_ingest_source_idempotent(tmp_path):
    from store.ingest import load_catalog, load_events
    from store.settings import Settings

    settings = Settings(home=tmp_path / "var")
    data = simulate(SimConfig(seed=5, n_users=100, n_streams=20, n_items=120, days=1, requests_per_day=150,
                              end=END))
    first = ingest_source(settings, data, progress=False, chunk_size=700)
    n = len(data.events)
    assert first["received"] == first["inserted"] == n and first["duplicates"] == 0
    assert first["catalog"]["streams"] == 20 and first["events_per_s"] > 0
    truth = pd.read_parquet(settings.artifact_dir / "simulator_truth.parquet")
    pd.testing.assert_frame_equal(truth, data.truth)
    stored = load_events(settings.database_url)
    assert len(stored) == n and set(stored["event_id"]) == set(data.events["event_id"])
    s = stored.sort_values("event_id").reset_index(drop=True)
    e = data.events.sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_series_equal(s["ts"], e["ts"])
    assert (s["position"].fillna(-1) == e["position"].fillna(-1)).all()
    again = ingest_source(settings, data, progress=False)
    assert again["inserted"] == 0 and again["duplicates"] == n
    cat = load_catalog(settings.database_url)
    assert len(cat["live_windows"]) == len(data.live_windows)
    assert len(load_events(settings.database_url)) == n


def test_ingest_real_sources(tmp_path, twitch_slice):
    from store.settings import Settings

    settings = Settings(home=tmp_path / "var")
    tw = load_twitch(twitch_slice[0])
    res = ingest_source(settings, tw, progress=False)
    assert res["inserted"] == len(tw.events) and res["truth_path"] is None
    obd = load_obd(shared_data("obd", "random", "all"))
    res = ingest_source(settings, obd, progress=False)
    assert res["inserted"] == len(obd.events) == 10_000 + (obd.events["type"] == "click").sum()


def test_ingest_source_bad_row_writes_nothing(tmp_path):
    from store.ingest import IngestError, load_catalog, load_events
    from store.settings import Settings

    settings = Settings(home=tmp_path / "var")
    data = simulate(SimConfig(seed=6, n_users=50, n_streams=10, n_items=60, days=1, requests_per_day=60, end=END))
    bad = data.events.copy()
    bad.loc[7, "value"] = -1.0
    bad.loc[9, "type"] = "teleport"
    with pytest.raises(IngestError) as exc:
        ingest_source(settings, SourceData(**{**data.__dict__, "events": bad}), progress=False)
    assert {e.row for e in exc.value.errors} == {7, 9}
    assert len(load_events(settings.database_url)) == 0
    assert len(load_catalog(settings.database_url)["streams"]) == 0


def test_simulated_impressions_carry_the_logging_policy_and_its_propensity(small):
    """Randomised slates are uniformly random ordered samples of the live streams: their exact
    propensity is 1 / (streams live); the noisy ranking's is not computed (null)."""
    ev, truth = small.events, small.truth
    imp = ev[ev["type"] == "impression"].merge(truth[["event_id", "randomized"]], on="event_id")
    assert set(imp["policy"]) == {"randomised", "ranked"}
    rnd = imp[imp["randomized"]]
    assert (rnd["policy"] == "randomised").all() and rnd["propensity"].between(1e-6, 1.0).all()
    lw = small.live_windows
    for _, row in rnd.sample(20, random_state=0).iterrows():
        live = lw[(lw.start_ts <= row["ts"]) & (lw.end_ts > row["ts"])].stream_id.nunique()
        assert row["propensity"] == pytest.approx(1.0 / live)
    assert imp.loc[~imp["randomized"], "propensity"].isna().all()
    assert ev.loc[ev["type"] != "impression", "propensity"].isna().all()


def test_the_planted_page_effect(small):
    """page_same_below: a stream right below one of its own category is clicked that much less; the
    truth says so (page_effect, p_click), and the default world has no such effect."""
    assert (small.truth["page_effect"] == 1.0).all()
    data = simulate(SimConfig(seed=0, page_same_below=0.4, **SMALL))
    imp = labelled_impressions(data)
    cat = data.streams.set_index("stream_id")["category"]
    imp = imp.assign(category=imp["stream_id"].map(cat).to_numpy()).sort_values(["request_id", "position"])
    above = imp.groupby("request_id")["category"].shift(1)
    repeat = (imp["category"] == above).to_numpy()
    assert repeat.sum() > 100
    np.testing.assert_allclose(imp["page_effect"].to_numpy(), np.where(repeat, 0.4, 1.0))
    np.testing.assert_allclose(imp["p_click"], imp["examination"] * imp["relevance"] * imp["page_effect"])
    # the clicks follow the truth: calibrated on the penalised impressions too
    pen = imp[repeat]
    assert abs(pen["click"].mean() - pen["p_click"].mean()) < 0.02
    with pytest.raises(ValueError, match="page_same_below"):
        simulate(SimConfig(seed=0, page_same_below=0.0, **SMALL))

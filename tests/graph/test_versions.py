"""graph.versions: each row takes the newest graph version trained strictly before it; the
registry's eligible versions; the graph job's back-fill (never active, never warm-started from a
version that saw later events)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graph.artifacts import Embeddings
from graph.versions import GraphVersions, load_versions

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def _emb(value: float, dim: int = 3) -> Embeddings:
    ids = np.array([1, 2, 5])
    return Embeddings(tables={"user": np.full((3, dim), value), "stream": np.full((3, dim), -value)},
                      id_maps={"user": ids, "stream": ids})


def _versions():
    until = [T0 + pd.Timedelta(hours=h) for h in (48, 0, 24)]        # unsorted on purpose
    return GraphVersions(np.array([u.value for u in until]), ["v48", "v0", "v24"],
                         [_emb(48.0), _emb(0.0), _emb(24.0)])


def test_each_row_takes_the_newest_version_trained_strictly_before_it():
    gv = _versions()
    assert gv.versions == ["v0", "v24", "v48"] and gv.dim == 3 and gv.newest.tables["user"][0, 0] == 48.0
    ts = pd.Series([T0 - pd.Timedelta(seconds=1), T0, T0 + pd.Timedelta(microseconds=1),
                    T0 + pd.Timedelta(hours=24), T0 + pd.Timedelta(hours=30), T0 + pd.Timedelta(days=9)])
    # a row AT a version's newest event may be that event's own outcome: not that version
    assert gv.index_at(ts).tolist() == [-1, -1, 0, 0, 1, 2]
    vec, idx = gv.lookup_at("user", [1, 2, 5, 1, 99, 2], ts)
    assert idx.tolist() == [-1, -1, 0, 0, 1, 2]
    assert vec[:2].tolist() == [[0.0] * 3] * 2                       # no version precedes: zeros
    assert vec[:, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 48.0]     # 99 unknown to v24: its default (zeros here)
    assert gv.lookup_at("user", [1], [T0 + pd.Timedelta(hours=30)])[0][0, 0] == 24.0
    svec, _ = gv.lookup_at("stream", [1] * 6, ts)
    assert svec[:, 0].tolist() == [0.0, 0.0, -0.0, -0.0, -24.0, -48.0]
    assert gv.counts(ts) == {"none": 2, "v0": 2, "v24": 1, "v48": 1}
    with pytest.raises(ValueError, match="dimensions"):
        GraphVersions(np.array([0, 1]), ["a", "b"], [_emb(1.0, 3), _emb(1.0, 4)])


def test_only_versions_whose_gate_passed_with_an_artifact_are_eligible(settings):
    from store.registry import register_model, reject
    url = settings.database_url

    def reg(name, hours, *, passed=True, dim=3, save=True):
        path = settings.artifact_dir / "embeddings" / name
        if save:
            _emb(float(hours), dim).save(path)
        register_model(url, "metapath2vec", name, str(path),
                       metrics={"gate": {"passed": passed}, "trained_until": (T0 + pd.Timedelta(hours=hours)).isoformat()})

    reg("a", 0)
    reg("b", 24)
    reg("failed", 30, passed=False)
    reg("missing", 36, save=False)
    reg("wide", 40, dim=5)
    reg("c", 48)
    reg("gone", 50)
    reject(url, "metapath2vec", "gone")
    gv = load_versions(url, dim=3)
    assert gv.versions == ["a", "b", "c"]
    assert load_versions(url, dim=3, before=T0 + pd.Timedelta(hours=48)).versions == ["a", "b"]   # strict
    assert load_versions(url, dim=3, max_versions=2).versions == ["b", "c"]
    assert load_versions(url).versions == ["a", "b", "c"]            # the newest eligible one's dim: 3
    assert load_versions(url, dim=5).versions == ["wide"]


def test_a_backfilled_version_is_never_active_and_never_warm_started_from_later_events(settings):
    from graph.job import train_and_register_embeddings
    from graph.metapath2vec import M2VConfig
    from store.registry import active_model, list_models
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate

    data = simulate(SimConfig(seed=4, n_users=60, n_streams=12, n_items=60, days=2, requests_per_day=120))
    ingest_source(settings, data, progress=False)
    cfg = M2VConfig(dim=8, walk_length=4, context_size=3, walks_per_node=1, epochs=1, negative_pool=8)
    full = train_and_register_embeddings(settings, config=cfg)
    ts = pd.to_datetime(data.events["ts"], utc=True)
    cut = ts.quantile(0.4)
    back = train_and_register_embeddings(settings, config=cfg, end=cut.to_pydatetime(), gate=False, promote=False)
    m = back["metrics"]
    assert back["status"] == "candidate" and m["backfill"] is True and m["gate"]["passed"]
    # the active version saw every event: warm-starting from it would carry later events in
    assert m["warm_start_from"] is None
    assert pd.Timestamp(m["trained_until"]) < cut
    assert pd.Timestamp(m["trained_until"]) == ts[ts < cut].max()
    assert active_model(settings.database_url, "metapath2vec")["version"] == full["version"]
    gv = load_versions(settings.database_url)
    assert gv.versions == [back["version"], full["version"]]
    # rows from the cut up to the full version's newest event take the back-fill: none takes the
    # version trained on their own outcome; only rows after everything it saw take it
    until = pd.Timestamp(full["metrics"]["trained_until"])
    rows = ts[(ts >= cut) & (ts <= until)]
    assert gv.counts(rows.reset_index(drop=True)) == {back["version"]: len(rows)}
    later = ts[ts > until]
    if len(later):
        assert gv.counts(later.reset_index(drop=True)) == {full["version"]: len(later)}
    assert len(list_models(settings.database_url, "metapath2vec")) == 2

"""Fixtures of the API tests: one tiny simulated world (SQL event log + applied, materialized Feast
repo) per session, a fresh Flask app per test, GBDT models trained in a second on synthetic rows."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

OFFLINE_STREAM = 9999          # in the catalog, never live, no statistics
N_USERS = 60
N_ALWAYS_LIVE = 10
PER_CATEGORY_LIVE = 3


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Settings of a small simulated world: events ingested, statistics materialized into Feast."""
    return make_world(tmp_path_factory.mktemp("api-world") / "var")


@pytest.fixture(scope="session")
def world_factory(tmp_path_factory):
    """make_world for a test that writes a lot into its world (fuzzing) and must not share one."""
    return lambda name: make_world(tmp_path_factory.mktemp(name) / "var")


def make_world(home):
    from feature_repo.statistics_job import run_statistics
    from feature_repo.store import apply_definitions
    from store.ingest import upsert_catalog
    from store.settings import Settings
    from store.sources import ingest_source
    from store.sources.simulator import SimConfig, simulate

    settings = Settings(home=home).ensure_dirs()
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    data = simulate(SimConfig(seed=7, n_users=N_USERS, n_streams=24, n_items=80, n_categories=4, days=3,
                              requests_per_day=150, end=end))
    ingest_source(settings, data, progress=False)
    # the simulator's broadcasts follow the time of day (24 streams: only 3–4 live around 00:00
    # UTC), and the tests run at any hour: broadcasts of streams 1..N_ALWAYS_LIVE cover the whole run,
    # and so do PER_CATEGORY_LIVE streams of every category (the page re-ranker's diversity rules,
    # at most 3 of one category in the top 10, need the live set to span the categories at any hour)
    cats = data.streams.sort_values("stream_id").groupby("category")["stream_id"].head(PER_CATEGORY_LIVE)
    always = np.union1d(np.arange(1, N_ALWAYS_LIVE + 1), cats.to_numpy())
    always = pd.DataFrame({"stream_id": always,
                           "start_ts": pd.Timestamp(end) - pd.Timedelta(hours=1),
                           "end_ts": pd.Timestamp(end) + pd.Timedelta(hours=49)})
    upsert_catalog(settings.database_url,
                   streams=pd.DataFrame({"stream_id": [OFFLINE_STREAM], "streamer_id": [1], "category": [2]}),
                   live_windows=always)
    apply_definitions(settings)
    run_statistics(settings, progress=False)
    return settings


@pytest.fixture
def offline_stream():
    return OFFLINE_STREAM


@pytest.fixture
def make_app(world):
    """create_app factory; every app made here is closed (snapshot thread stopped) after the test."""
    from api import close_app, create_app
    apps = []

    def make(settings=None, *, background=False, **config):
        from policy.explore import ExploreConfig
        from policy.page import PageConfig
        from policy.rerank import RerankConfig
        app = create_app(settings or world)
        # the ranked order only, unless a test turns the page policy on (tests/api/test_rerank_serving.py)
        app.config.update({"TESTING": True, "SNAPSHOT_BACKGROUND": background, "MODEL_CHECK_S": 0.0,
                           "READY_TIMEOUT_S": 60.0,
                           "PAGE_CONFIG": PageConfig(explore=ExploreConfig(share=0.0), randomise_share=0.0,
                                                     rerank=RerankConfig(width=0)),
                           **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def live_ids(world):
    from store.ingest import live_stream_ids
    ids = live_stream_ids(world.database_url, datetime.now(timezone.utc))
    assert len(ids) >= 5, "the simulated world should have streams live now"
    return ids


_versions = itertools.count(1)


def train_tiny_gbdt(settings, *, direction: float = 1.0, seed: int = 0):
    """A LightGBM model on synthetic FEATURE_COLUMNS rows: click probability rises with
    ``direction * s_clicks_7d`` and with the user's taste for the category, so its ranking is
    not plain popularity when direction < 0. Saved under settings.artifact_dir; (model, path)."""
    from feature_repo.features import FEATURE_COLUMNS
    from ranking.gbdt import train_gbdt
    rng = np.random.default_rng(seed)
    n = 3000
    df = pd.DataFrame(rng.random((n, len(FEATURE_COLUMNS))) * 50, columns=FEATURE_COLUMNS)
    logit = direction * (df["s_clicks_7d"] - 25) / 5 + 2 * (df["uc_click_share_30d"] / 50 - 0.5)
    df["click"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    model = train_gbdt(df, None, FEATURE_COLUMNS, label="click",
                       params={"min_data_in_leaf": 20, "num_leaves": 7, "verbose": -1, "num_threads": 1}, num_boost_round=20)
    path = settings.artifact_dir / "models" / "gbdt" / f"test-{next(_versions)}"
    model.save(path)
    return model, path


@pytest.fixture(scope="session")
def gbdt_trainer():
    """train_tiny_gbdt, for fixtures wider than a test."""
    return train_tiny_gbdt


@pytest.fixture
def register_gbdt(world):
    """register_gbdt(direction=..) -> (version, model): registered and promoted to active. Every gbdt
    version is rejected after the test, so other tests see no active model."""
    from store.registry import list_models, promote, register_model, reject

    def register(direction: float = 1.0, *, promote_it: bool = True, path=None, model=None):
        version = f"v{next(_versions)}"
        if path is None:
            model, path = train_tiny_gbdt(world, direction=direction)
        register_model(world.database_url, "gbdt", version, str(path), metrics={"auc": 0.5})
        if promote_it:
            promote(world.database_url, "gbdt", version)
        return version, model

    yield register
    for m in list_models(world.database_url, "gbdt"):
        reject(world.database_url, "gbdt", m["version"])


class _DB:
    """Small SQL helpers over the world's database."""

    def __init__(self, settings):
        self.settings = settings

    def rows(self, sql: str, **params) -> list:
        from sqlalchemy import text
        from store.db import get_engine
        with get_engine(self.settings.database_url).connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def count(self, table: str, where: str = "", **params) -> int:
        return int(self.rows(f"SELECT COUNT(*) FROM {table} {where}", **params)[0][0])

    def snapshot(self) -> dict:
        """Row counts of the tables the API writes (to assert 'nothing written')."""
        return {t: self.count(t) for t in ("events", "impressions", "users")}


@pytest.fixture
def db(world):
    return _DB(world)

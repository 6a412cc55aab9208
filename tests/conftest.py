import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"


@pytest.fixture
def settings(tmp_path):
    from store.settings import Settings
    return Settings(home=tmp_path / "var").ensure_dirs()


PG_DEFAULT = "postgresql+psycopg://streamrank:streamrank@127.0.0.1:5432/streamrank_test"


def postgres_url() -> str:
    """The PostgreSQL test database (``.ci/run`` installs and starts the Debian server on
    127.0.0.1). Skipped when unreachable, except in CI, where it must be there."""
    url = os.environ.get("STREAMRANK_TEST_POSTGRES", PG_DEFAULT)
    try:
        import sqlalchemy
        eng = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
    except Exception as exc:  # driver missing or server down
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"PostgreSQL is required in CI and is not reachable at {url}: {exc}")
        pytest.skip(f"no PostgreSQL at {url} ({type(exc).__name__})")
    return url


@pytest.fixture
def postgres() -> str:
    """The PostgreSQL test database's URL (skipped when unreachable, outside CI)."""
    return postgres_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, settings):
    """An empty event log + registry on SQLite (under tmp) and on PostgreSQL."""
    if request.param == "sqlite":
        return settings.database_url
    from store.db import get_engine
    from store.schema import Base
    url = postgres_url()
    engine = get_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    return url


def shared_data(*parts) -> Path:
    p = SHARED.joinpath("data", *parts)
    if not p.exists():
        if os.environ.get("CI") == "true":
            raise FileNotFoundError(f"{p} is missing (CI has ../shared beside the clone)")
        pytest.skip(f"{p} not available")
    return p


_EXIT = {"status": 0}


def pytest_sessionfinish(session, exitstatus):
    _EXIT["status"] = int(exitstatus)


def pytest_unconfigure(config):
    # duckdb's nanobind bindings print pages of "leaked instance" lines at interpreter exit,
    # after pytest's summary; leave right after the summary (same exit status) instead.
    if os.environ.get("STREAMRANK_TEST_CLEAN_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT["status"])

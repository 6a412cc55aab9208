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

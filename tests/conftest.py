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

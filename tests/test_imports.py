"""Start-up paths stay light: the CLI, the Celery app and the API import no torch / feast /
lightgbm / torch_geometric at import time (NOTES.md: feast alone costs ~6.5 s and 360 MB)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "feast", "lightgbm", "torch_geometric"]


@pytest.mark.parametrize("stmt", ["import streamrank.cli as m; m.build_parser()", "import workers.celery_app",
                                  "import api; api.create_app"])
def test_no_heavy_import(stmt):
    code = f"{stmt}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{stmt} imported {out.stdout.strip()}"


def test_cli_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "streamrank.cli", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    for cmd in ("ingest", "pipeline", "worker", "beat", "serve", "evaluate", "evaluate-graph", "evaluate-retrieval", "run"):
        assert cmd in out.stdout

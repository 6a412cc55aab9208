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
    for cmd in ("ingest", "pipeline", "worker", "beat", "serve", "evaluate", "evaluate-graph", "evaluate-retrieval", "run",
                "evaluate-ope", "position-curve", "report"):
        assert cmd in out.stdout


PACKAGES = ["api", "feature_repo", "graph", "ranking", "policy", "ope", "retrieval", "store", "workers", "streamrank"]


def _module_imports() -> dict:
    """{module: the product modules it imports (at module level or inside functions)}."""
    import ast
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            rel = f.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            mods[name] = f
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        here = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[:len(here.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` imports the submodule x, not the package
                names = [f"{target}.{a.name}" for a in node.names]
                found = [n for n in names if n in mods]
                targets = found or [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[m].update(t for t in targets if t in mods and t != m)
    return edges


def test_no_two_modules_import_each_other():
    """One job per file and no import circles (the ranker issue: definitions ↔ features,
    artifacts ↔ metapath2vec and evaluate ↔ train were broken up)."""
    edges = _module_imports()
    assert "feature_repo.objects" in edges and "ranking.job" in edges
    circles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, ())})
    assert circles == [], circles

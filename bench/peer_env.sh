#!/usr/bin/env bash
# Separate bench environment for the PEER ranking libraries (torch-rechub, DeepCTR-Torch) that
# bench/peers.py compares against, and for Open Bandit Pipeline (obp), the off-policy-evaluation
# peer. They are used only for comparison, so they live in
# .bench-venv/ at the repo root and never in the product's dependencies (pyproject.toml).
#
#   bash bench/peer_env.sh          # creates .bench-venv/ once; re-running is a no-op
#   FORCE=1 bash bench/peer_env.sh  # rebuild from scratch
#
# Notes on what these packages really need (checked against the installed wheels):
# - torch==2.13.0 is installed FIRST: it resolves to the CPU wheel that pip finds locally
#   (find-links); a plain `torch` requirement would pull a multi-GB CUDA build.
# - torch-rechub 0.9.0 declares numpy/pandas/scikit-learn/torch/tqdm; its ranking/multi-task
#   models and trainers import nothing else at module level (faiss, annoy, milvus, onnx,
#   transformers, wandb... are optional extras imported lazily) -> installed with its deps.
# - deepctr-torch 0.3.0 declares torch/tqdm/scikit-learn, but `import deepctr_torch` runs
#   deepctr_torch/utils.py, which does `import requests` at module level (undeclared) and
#   starts a thread that asks PyPI for the latest version. Its callbacks are plain Python
#   (no tensorflow/keras). So: `requests` is installed explicitly here, tensorflow is NOT;
#   peers.py disables the version-check thread before importing the package (see there).
# - obp 0.5.7 (last release, 2023) is installed with `--no-deps --ignore-requires-python`, after
#   everything else. Its sdist builds with poetry-core, so the wheel's metadata comes from
#   [tool.poetry] and is made of exact 2022 pins that cannot all hold here: Requires-Python
#   <3.11 (the local torch wheel is cp311-only), torch==1.12 (vs the torch==2.13.0 pin; no cp311
#   wheel of it exists), numpy==1.23.5 (vs numpy 2, which torch-rechub/deepctr-torch get here),
#   pandas==1.5.2, scikit-learn==1.1.3, scipy==1.9.3, Pillow==9.1.1, seaborn<0.12,
#   pingouin<0.5, pyieoe<0.2, mypy-extensions<0.5. What `import obp` really imports (obp.dataset,
#   .ope, .policy, .simulator, .utils) is numpy, scipy, pandas, scikit-learn, torch, tqdm, pyyaml
#   (policy/contextfree.py reads conf/prior_bts.yaml at import), matplotlib and seaborn (ope/meta*.py,
#   module level) -> those are installed here (OBP_DEPS), current versions. pingouin, pyieoe and
#   mypy-extensions are declared but imported nowhere in obp -> not installed.
#   So `pip check` cannot pass as such: its only tolerated failures are obp 0.5.7's own lines
#   ("obp 0.5.7 has requirement X==old, but you have X new" for its pins, and "obp 0.5.7 requires
#   pingouin|pyieoe|mypy-extensions, which is not installed"); any other line still fails the
#   script, and `import obp` is checked instead (after pip check, below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.bench-venv"
PY="$VENV/bin/python"
STAMP="$VENV/.installed-peers-v2"
PYTHON="${PYTHON:-python3}"

TORCH_PIN="torch==2.13.0"
PEER_PINS=("torch-rechub==0.9.0" "deepctr-torch==0.3.0")
BASE_PINS=("numpy>=2,<3" "pandas>=2.2,<3" "scikit-learn>=1.5" "tqdm" "requests")
OBP_PIN="obp==0.5.7"
OBP_DEPS=("scipy" "pyyaml" "matplotlib" "seaborn")
# pip check lines that obp 0.5.7's unsatisfiable metadata produces (see the header); nothing else.
OBP_KNOWN_RE='^obp 0\.5\.7 (has requirement |requires (pingouin|pyieoe|mypy-extensions), which is not installed)'

if [[ "${FORCE:-0}" == "1" ]]; then
    rm -rf "$VENV"
fi

if [[ -f "$STAMP" ]]; then
    echo "peer_env: $VENV already set up ($(basename "$STAMP")); FORCE=1 to rebuild"
else
    test -x "$PY" || "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "$TORCH_PIN"
    # Refuse a CUDA build: the bench machine is CPU-only and the CUDA wheels are huge.
    "$PY" - <<'EOF'
import torch, sys
if torch.version.cuda is not None:
    sys.exit(f"peer_env: got a CUDA torch ({torch.__version__}); expected the CPU wheel")
EOF
    # torch is already satisfied, so the peers cannot drag in a different (CUDA) build.
    "$PY" -m pip install -q "${BASE_PINS[@]}" "${PEER_PINS[@]}" "${OBP_DEPS[@]}" "$TORCH_PIN"
    # obp last: without its (unsatisfiable) declared deps, so it cannot downgrade anything above.
    "$PY" -m pip install -q --no-deps --ignore-requires-python "$OBP_PIN"
    rm -f "$VENV/.installed-peers-v1"
    touch "$STAMP"
fi

echo "peer_env: pip check"
set +e
CHECK_OUT="$("$PY" -m pip check 2>&1)"
CHECK_RC=$?
set -e
if [[ $CHECK_RC -ne 0 ]]; then
    UNEXPECTED="$(grep -vE "$OBP_KNOWN_RE" <<<"$CHECK_OUT" || true)"
    if [[ -n "$UNEXPECTED" ]]; then
        echo "$CHECK_OUT"
        echo "peer_env: pip check FAILED (beyond obp 0.5.7's known metadata pins):"
        echo "$UNEXPECTED"
        exit 1
    fi
    echo "peer_env: pip check: only obp 0.5.7's known declared pins (installed --no-deps, see header):"
    sed 's/^/    /' <<<"$CHECK_OUT"
else
    echo "$CHECK_OUT"
fi
"$PY" - <<'EOF'
import importlib.metadata as md
import obp  # the deps it really imports are present (pip check cannot tell, see the header)
for name in ["torch", "torch-rechub", "deepctr-torch", "obp", "numpy", "pandas", "scikit-learn",
             "scipy", "tqdm", "requests", "pyyaml", "matplotlib", "seaborn"]:
    print(f"  {name}=={md.version(name)}")
EOF

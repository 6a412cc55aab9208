#!/usr/bin/env bash
# Separate bench environment for the PEER ranking libraries (torch-rechub, DeepCTR-Torch) that
# bench/peers.py compares against. They are used only for comparison, so they live in
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
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.bench-venv"
PY="$VENV/bin/python"
STAMP="$VENV/.installed-peers-v1"
PYTHON="${PYTHON:-python3}"

TORCH_PIN="torch==2.13.0"
PEER_PINS=("torch-rechub==0.9.0" "deepctr-torch==0.3.0")
BASE_PINS=("numpy>=2,<3" "pandas>=2.2,<3" "scikit-learn>=1.5" "tqdm" "requests")

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
    "$PY" -m pip install -q "${BASE_PINS[@]}" "${PEER_PINS[@]}" "$TORCH_PIN"
    touch "$STAMP"
fi

echo "peer_env: pip check"
"$PY" -m pip check || { echo "peer_env: pip check FAILED"; exit 1; }
"$PY" - <<'EOF'
import importlib.metadata as md
for name in ["torch", "torch-rechub", "deepctr-torch", "numpy", "pandas", "scikit-learn", "tqdm", "requests"]:
    print(f"  {name}=={md.version(name)}")
EOF

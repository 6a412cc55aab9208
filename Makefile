# StreamRank — the two commands: `make run` (whole job on the embedded default, then serve) and
# `make test`. Both create .venv on a fresh machine: torch==2.13.0 first (the CPU wheel; a plain
# `torch` pulls a multi-GB CUDA build), then the project.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install bench clean

run: $(STAMP)
	$(VENV)/bin/streamrank run

test: $(STAMP)
	$(PY) -m pytest -q tests

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/recommend.py

clean:
	rm -rf var .pytest_cache

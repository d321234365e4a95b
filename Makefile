# `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench bench-quick clean

setup: $(STAMP)

# torch first, pinned: the CPU build lies on disk; a bare `torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/raymlp demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest tests

test-fast: $(STAMP)
	$(PY) -m pytest tests -m 'not slow' -x

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The benchmarks' anchors (DuckDB) are the `bench` extra.
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m bench.run_all

bench-quick: $(VENV)/.bench-installed
	$(PY) -m bench.run_all --quick

clean:
	rm -rf $(VENV) .raymlp .pytest_cache .ruff_cache
